#include "util/supervise.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/clock.h"
#include "util/log.h"
#include "util/signals.h"

#define SETUP_FAILED 70 /* EX_SOFTWARE */
#define WAKE_CHILD 0x01
#define WAKE_STOP 0x80 /* | signo */

/* Write end of the running supervisor's wake-up pipe; -1 when none runs. */
static atomic_int wake_fd = -1;

double fw_backoff_delay(unsigned attempt, const fw_backoff *p)
{
    if (!p || !(p->initial_s > 0))
        return 0;
    double cap = p->max_s > 0 ? p->max_s : p->initial_s;
    double mult = p->multiplier >= 1 ? p->multiplier : 1;
    double d = p->initial_s * pow(mult, (double)attempt);
    return !isfinite(d) || d > cap ? cap : d;
}

void fw_supervise_opts_init(fw_supervise_opts *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->backoff = (fw_backoff){1.0, 60.0, 2.0};
    o->healthy_reset_s = 60;
    o->max_restarts = 10;
    o->probe_interval_s = 5;
    o->probe_start_delay_s = 30;
    o->probe_failures = 3;
    o->kill_grace_s = 10;
    o->stop_grace_s = 30;
    o->handle_signals = true;
}

static void wake(unsigned char byte)
{
    int fd = atomic_load(&wake_fd);
    if (fd >= 0) {
        int saved = errno;
        ssize_t r = write(fd, &byte, 1); /* a full pipe already holds a wake-up */
        (void)r;
        errno = saved;
    }
}

void fw_supervise_request_stop(int signo)
{
    if (signo <= 0 || signo >= 0x80)
        signo = SIGTERM;
    wake((unsigned char)(WAKE_STOP | signo));
}

static void on_sigchld(int sig)
{
    (void)sig;
    wake(WAKE_CHILD);
}

static void on_stop_signal(int sig)
{
    fw_supervise_request_stop(sig);
}

static uint64_t secs_to_ns(double s)
{
    if (!(s > 0))
        return 0;
    if (s > 1e9)
        return (uint64_t)1e18;
    return (uint64_t)(s * 1e9);
}

typedef struct sup {
    const fw_supervise_opts *o;
    int rfd, wfd;
    pid_t child;
    uint64_t healthy_since, next_probe, kill_at, restart_at;
    unsigned failures, probe_fails;
    bool hung, stopping;
    int last_status;
} sup;

static void emit(const sup *s, fw_supervise_event ev)
{
    if (s->o->on_event)
        s->o->on_event(&ev, s->o->event_user);
}

/* In the forked child: drop the supervisor's plumbing, then exec or run child_main. */
static void run_child(const sup *s, pid_t parent)
{
    setpgid(0, 0);
#ifdef __linux__
    /* A supervisor killed with SIGKILL cannot stop its child: have the kernel send the child
     * SIGTERM then (graceful drain), and cover the race where the parent already died. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
        _exit(1);
#else
    (void)parent;
#endif
    atomic_store(&wake_fd, -1);
    close(s->rfd);
    close(s->wfd);
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGCHLD, &dfl, NULL);
    fw_signals_reset_child();
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (s->o->argv) {
        execvp(s->o->argv[0], s->o->argv);
        const char *parts[] = {"supervise: cannot exec ", s->o->argv[0], ": ", strerror(errno),
                               "\n"};
        for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
            ssize_t r = write(STDERR_FILENO, parts[i], strlen(parts[i]));
            (void)r;
        }
        _exit(127);
    }
    int rc = s->o->child_main(s->o->child_user);
    fflush(NULL);
    _exit(rc & 0xff);
}

/* Records a failed run (exit status code, why) and schedules the restart; false when giving
 * up. */
static bool on_failure(sup *s, int code, const char *why, uint64_t now, fw_error *err)
{
    s->failures++;
    s->last_status = code;
    const fw_supervise_opts *o = s->o;
    if (o->max_restarts >= 0 && s->failures > (unsigned)o->max_restarts) {
        emit(s, (fw_supervise_event){.kind = FW_SUP_GIVING_UP, .failures = s->failures});
        FW_ERROR("supervise", "giving up", "failures=%u last_status=%d reason=%s", s->failures,
                 code, why);
        fw_error_set(err, FW_ERR_UNAVAILABLE,
                     "supervise: gave up after %u consecutive failures (last status %d)",
                     s->failures, code);
        return false;
    }
    unsigned attempt = s->failures - 1;
    double delay = fw_backoff_delay(attempt, &o->backoff);
    s->restart_at = now + secs_to_ns(delay);
    emit(s, (fw_supervise_event){.kind = FW_SUP_BACKOFF,
                                 .attempt = attempt,
                                 .delay_s = delay,
                                 .failures = s->failures});
    FW_WARN("supervise", "restarting child", "attempt=%u delay_s=%.3f last_status=%d reason=%s",
            s->failures, delay, code, why);
    return true;
}

static bool start_child(sup *s, uint64_t now, fw_error *err)
{
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0)
        run_child(s, parent);
    if (pid < 0) {
        FW_ERROR("supervise", "fork failed", "error=\"%s\"", strerror(errno));
        return on_failure(s, SETUP_FAILED, "fork_failed", now, err);
    }
    setpgid(pid, pid); /* also done by the child; whichever runs first wins the race */
    s->child = pid;
    s->healthy_since = now;
    s->next_probe = now + secs_to_ns(s->o->probe_start_delay_s);
    s->kill_at = 0;
    s->probe_fails = 0;
    s->hung = false;
    emit(s, (fw_supervise_event){.kind = FW_SUP_STARTED, .pid = pid});
    FW_INFO("supervise", "child started", "pid=%ld", (long)pid);
    return true;
}

static void send_signal(sup *s, int signo)
{
    emit(s, (fw_supervise_event){.kind = FW_SUP_KILLING, .pid = s->child, .signo = signo});
    FW_INFO("supervise", "signalling child", "pid=%ld signal=%d", (long)s->child, signo);
    if (signo == SIGKILL)
        kill(-s->child, SIGKILL); /* the whole group: helpers of a hung child too */
    kill(s->child, signo);
}

static void maybe_reset(sup *s, uint64_t now)
{
    uint64_t win = secs_to_ns(s->o->healthy_reset_s);
    if (win && s->failures && !s->hung && now - s->healthy_since >= win) {
        FW_INFO("supervise", "child healthy, backoff reset", "pid=%ld", (long)s->child);
        s->failures = 0;
    }
}

/* Returns true while the loop should go on. */
static bool handle_exit(sup *s, int wstatus, uint64_t now, fw_error *err, int *result)
{
    bool sig = WIFSIGNALED(wstatus);
    int code = sig ? 128 + WTERMSIG(wstatus) : WEXITSTATUS(wstatus);
    emit(s, (fw_supervise_event){
                .kind = FW_SUP_EXITED, .pid = s->child, .status = code, .signaled = sig});
    FW_INFO("supervise", "child exited", "pid=%ld status=%d", (long)s->child, code);
    maybe_reset(s, now);
    bool hung = s->hung;
    s->child = -1;
    s->kill_at = 0;
    s->hung = false;
    if (s->stopping) {
        *result = code;
        return false;
    }
    if (code == 0 && !hung) {
        *result = 0;
        return false;
    }
    if (!on_failure(s, code ? code : 1, hung ? "hung" : sig ? "killed" : "exited", now, err)) {
        *result = code ? code : 1;
        return false;
    }
    return true;
}

static void handle_stop(sup *s, int signo, uint64_t now)
{
    emit(s, (fw_supervise_event){.kind = FW_SUP_STOPPING, .signo = signo, .pid = s->child});
    if (!s->stopping) {
        FW_INFO("supervise", "stopping", "signal=%d", signo);
        s->stopping = true;
        if (s->child > 0) {
            send_signal(s, signo);
            uint64_t at = now + secs_to_ns(s->o->stop_grace_s);
            if (!s->kill_at || at < s->kill_at)
                s->kill_at = at;
        }
    } else if (s->child > 0) {
        send_signal(s, SIGKILL);
        s->kill_at = 0;
    }
}

static void consider(uint64_t *deadline, uint64_t t)
{
    if (t < *deadline)
        *deadline = t;
}

int fw_supervise(const fw_supervise_opts *o, fw_error *err)
{
    if (!o || (!o->argv == !o->child_main) || (o->argv && !o->argv[0])) {
        fw_error_set(err, FW_ERR_INVALID_ARGUMENT,
                     "supervise: need exactly one of argv and "
                     "child_main");
        return SETUP_FAILED;
    }
    if (o->probe && !o->probe_failures) {
        fw_error_set(err, FW_ERR_INVALID_ARGUMENT, "supervise: probe_failures must be >= 1");
        return SETUP_FAILED;
    }
    int fds[2];
    if (pipe(fds) != 0) {
        fw_error_set(err, FW_ERR_IO, "supervise: pipe: %s", strerror(errno));
        return SETUP_FAILED;
    }
    for (int i = 0; i < 2; i++) {
        int fl = fcntl(fds[i], F_GETFL);
        int fdfl = fcntl(fds[i], F_GETFD);
        if (fl < 0 || fdfl < 0 || fcntl(fds[i], F_SETFL, fl | O_NONBLOCK) != 0 ||
            fcntl(fds[i], F_SETFD, fdfl | FD_CLOEXEC) != 0) {
            close(fds[0]);
            close(fds[1]);
            fw_error_set(err, FW_ERR_IO, "supervise: fcntl: %s", strerror(errno));
            return SETUP_FAILED;
        }
    }
    int expected = -1;
    if (!atomic_compare_exchange_strong(&wake_fd, &expected, fds[1])) {
        close(fds[0]);
        close(fds[1]);
        fw_error_set(err, FW_ERR_BUSY, "supervise: already running in this process");
        return SETUP_FAILED;
    }
    struct sigaction sa, old_chld, old_term, old_int;
    memset(&sa, 0, sizeof sa);
    memset(&old_term, 0, sizeof old_term);
    memset(&old_int, 0, sizeof old_int);
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sa.sa_handler = on_sigchld;
    sigaction(SIGCHLD, &sa, &old_chld);
    if (o->handle_signals) {
        sa.sa_flags = SA_RESTART;
        sa.sa_handler = on_stop_signal;
        sigaction(SIGTERM, &sa, &old_term);
        sigaction(SIGINT, &sa, &old_int);
    }

    sup s = {.o = o, .rfd = fds[0], .wfd = fds[1], .child = -1, .restart_at = fw_now_ns()};
    fw_error_clear(err);
    int result = 0;
    for (;;) {
        uint64_t now = fw_now_ns();
        if (s.child < 0) {
            if (s.stopping) {
                result = s.last_status;
                break;
            }
            if (now >= s.restart_at && !start_child(&s, now, err)) {
                result = s.last_status ? s.last_status : 1;
                break;
            }
        }

        /* Sleep until the next timer, a child exit or a stop request. SIGCHLD wakes us; the
         * 1 s cap only guards against a lost wake-up (SIGCHLD blocked by the caller). */
        uint64_t deadline = UINT64_MAX;
        if (s.child < 0)
            consider(&deadline, s.restart_at);
        else {
            consider(&deadline, now + 1000000000u);
            if (s.kill_at)
                consider(&deadline, s.kill_at);
            if (o->probe && !s.hung && !s.stopping)
                consider(&deadline, s.next_probe);
            uint64_t win = secs_to_ns(o->healthy_reset_s);
            if (win && s.failures && !s.hung)
                consider(&deadline, s.healthy_since + win);
        }
        int timeout = -1;
        if (deadline != UINT64_MAX) {
            uint64_t ms = deadline > now ? (deadline - now + 999999u) / 1000000u : 0;
            timeout = ms > INT_MAX ? INT_MAX : (int)ms;
        }
        struct pollfd pfd = {.fd = s.rfd, .events = POLLIN};
        if (poll(&pfd, 1, timeout) < 0 && errno != EINTR) {
            fw_error_set(err, FW_ERR_IO, "supervise: poll: %s", strerror(errno));
            result = SETUP_FAILED;
            break;
        }
        now = fw_now_ns();

        unsigned char buf[64];
        ssize_t n;
        while ((n = read(s.rfd, buf, sizeof buf)) > 0)
            for (ssize_t i = 0; i < n; i++)
                if (buf[i] & WAKE_STOP)
                    handle_stop(&s, buf[i] & 0x7f, now);

        if (s.child > 0) {
            int ws;
            pid_t r = waitpid(s.child, &ws, WNOHANG);
            if (r == s.child) {
                if (!handle_exit(&s, ws, now, err, &result))
                    break;
                continue;
            }
            if (r < 0 && errno == ECHILD) { /* reaped behind our back */
                FW_ERROR("supervise", "child vanished", "pid=%ld", (long)s.child);
                if (!handle_exit(&s, 1 << 8, now, err, &result))
                    break;
                continue;
            }
        }
        if (s.child < 0)
            continue;

        if (s.kill_at && now >= s.kill_at) {
            send_signal(&s, SIGKILL);
            s.kill_at = 0;
        }
        if (o->probe && !s.hung && !s.stopping && now >= s.next_probe) {
            bool ok = o->probe((long)s.child, o->probe_user);
            now = fw_now_ns();
            s.next_probe = now + secs_to_ns(o->probe_interval_s);
            if (ok) {
                s.probe_fails = 0;
            } else {
                s.probe_fails++;
                s.healthy_since = now;
                emit(&s, (fw_supervise_event){.kind = FW_SUP_PROBE_FAILED,
                                              .pid = s.child,
                                              .failures = s.probe_fails});
                FW_WARN("supervise", "health probe failed", "pid=%ld failures=%u", (long)s.child,
                        s.probe_fails);
                if (s.probe_fails >= o->probe_failures) {
                    s.hung = true;
                    send_signal(&s, SIGTERM);
                    s.kill_at = now + secs_to_ns(o->kill_grace_s);
                }
            }
        }
        maybe_reset(&s, now);
    }

    sigaction(SIGCHLD, &old_chld, NULL);
    if (o->handle_signals) {
        sigaction(SIGTERM, &old_term, NULL);
        sigaction(SIGINT, &old_int, NULL);
    }
    atomic_store(&wake_fd, -1);
    close(fds[0]);
    close(fds[1]);
    return result;
}
