/* fw_engine_describe_json: what a pack holds and where it runs, for `facework models`
 * and the worker's /gpu_info. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/ort.h"
#include "core/pipeline.h"

static json_t *shape_json(const fw_shape *s)
{
    json_t *a = json_array();
    for (int i = 0; i < s->rank; i++)
        json_array_append_new(a, s->dims[i] < 0 ? json_string("N") : json_integer(s->dims[i]));
    return a;
}

static json_t *model_json(const fw_engine *eng, fw_role role, const fw_pack_model *pm)
{
    const fw_model *model = fw__engine_model(eng, role); /* after a fallback: the CPU one */
    const fw_model_info *info = fw_model_get_info(model);
    fw_role_status rs;
    fw_engine_role_status(eng, role, &rs);
    json_t *m = json_object();
    const char *base = strrchr(info->path, '/');
    json_object_set_new(m, "role", json_string(fw_role_name(role)));
    json_object_set_new(m, "file", json_string(base ? base + 1 : info->path));
    json_object_set_new(m, "kind", json_string(fw_model_kind_name(pm->kind)));
    json_object_set_new(m, "provider", json_string(fw_model_provider(model)));
    if (rs.fell_back) {
        json_t *fb = json_object();
        json_object_set_new(fb, "from", json_string(rs.fallback_from));
        json_object_set_new(fb, "reason", json_string(rs.fallback_reason));
        json_object_set_new(m, "fallback", fb);
    }
    json_object_set_new(m, "batch_dynamic", json_boolean(pm->batch_dynamic));
    json_t *ins = json_object();
    for (size_t i = 0; i < info->n_inputs; i++)
        json_object_set_new(ins, info->input_names[i], shape_json(&info->inputs[i]));
    json_object_set_new(m, "inputs", ins);
    json_t *outs = json_object();
    for (size_t i = 0; i < info->n_outputs; i++)
        json_object_set_new(outs, info->output_names[i], shape_json(&info->outputs[i]));
    json_object_set_new(m, "outputs", outs);
    return m;
}

char *fw_engine_describe_json(const fw_engine *eng)
{
    const fw_pack *p = fw__engine_pack(eng);
    json_t *root = json_object();
    json_object_set_new(root, "pack", json_string(p->name));
    json_object_set_new(root, "dir", json_string(p->dir));
    json_object_set_new(root, "embedding_dim", json_integer((json_int_t)p->embedding_dim));
    json_t *models = json_array();
    json_array_append_new(models, model_json(eng, FW_ROLE_DETECTOR, &p->detector));
    if (p->has_landmarks)
        json_array_append_new(models, model_json(eng, FW_ROLE_LANDMARKS, &p->landmarks));
    json_array_append_new(models, model_json(eng, FW_ROLE_EMBEDDER, &p->embedder));
    json_object_set_new(root, "models", models);
    json_object_set_new(root, "onnxruntime_version", json_string(fw_ort_version()));
    const char *names[FW_PROVIDER__COUNT];
    size_t n = fw_ort_available_providers(names, FW_PROVIDER__COUNT);
    json_t *av = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(av, json_string(names[i]));
    json_object_set_new(root, "available_providers", av);
    char *s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    return s;
}
