# Plot of the worker load benchmark (bench/worker.sh writes the data and calls this).
# Variables (gnuplot -e): out (PNG path); series (data files of "concurrency img/s" rows);
# titles (one quoted title per series); dts, lcs (dash type and colour index per series);
# inproc, inproc_sat, bare (img/s reference lines); ncpu; label (subtitle).
set terminal pngcairo size 920,480 font "sans,10"
set output out
set title "facework worker: images/s against requests in flight\n{/*0.85 ".label."}"
set logscale x 2
set xlabel "concurrency (requests in flight)"
set ylabel "images/s"
set yrange [0:*]
set offsets graph 0.02, graph 0.02, graph 0.10, 0
set grid
set key outside right top vertical spacing 1.2
set linetype 1 lc rgb "#1b9e77"
set linetype 2 lc rgb "#d95f02"
set linetype 3 lc rgb "#7570b3"
set linetype 4 lc rgb "#e7298a"
plot for [i=1:words(series)] word(series, i) using 1:2 with linespoints lw 2 pt 7 ps 0.8 \
       dt int(word(dts, i)) lc int(word(lcs, i)) title word(titles, i), \
     bare with lines dt 3 lw 2 lc rgb "black" title "bare models (fw\\_bench)", \
     inproc with lines dt 2 lw 2 lc rgb "gray40" title "in-process pipeline, 1 caller", \
     inproc_sat with lines dt 4 lw 2 lc rgb "gray60" \
       title sprintf("in-process pipeline, %d callers", ncpu)
