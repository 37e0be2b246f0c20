/* nasrt C API: load a model.nasrt and run it on pinned path threads, no Python.
 *
 *   char* err = NULL;
 *   nasrt_model* m = nasrt_model_load("model.nasrt", 0, &err);
 *   if (!m) { fprintf(stderr, "%s\n", err); nasrt_error_free(err); return 1; }
 *   nasrt_model_run(m, input, 1, logits, &err);
 *   nasrt_model_free(m);
 *
 * Every function that can fail returns NULL or non-zero and, when `error` is
 * not NULL, sets *error to a message naming the file and field (free it with
 * nasrt_error_free). No function aborts or prints on bad input. A model may be
 * run from several threads; calls are serialised.
 */
#ifndef NASRT_NASRT_H
#define NASRT_NASRT_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nasrt_model nasrt_model;

typedef struct nasrt_options {
  int threads;        /* 0 = min(paths, available cores); 1 = all paths on the calling thread */
  const int* cores;   /* NULL: the process's cores in order; else ncores ids, slot t >= 1 pinned to cores[t] */
  int ncores;
  const char* backend; /* NULL or "auto" (tuning file, else built-in choice), "onednn", "xnnpack", "reference" */
  int tune;           /* 1: time every conv on every backend now and write <model>.tune.json */
  int balance;        /* 1 (default): split the slowest path's convs over all threads */
  int fixed_threads;  /* 0 (default): run on the calling thread alone while `threads` measure slower
                       * (a busy core); 1: always `threads` (benchmarks of a fixed configuration) */
} nasrt_options;

/* Defaults: threads 0, cores NULL, backend NULL, tune 0, balance 1, fixed_threads 0. */
void nasrt_options_init(nasrt_options* options);

/* threads: 0 = min(paths, cores). Returns NULL on failure and sets *error. */
nasrt_model* nasrt_model_load(const char* path, int threads, char** error);
nasrt_model* nasrt_model_load_ex(const char* path, const nasrt_options* options, char** error);

/* 0 on success. */
int nasrt_model_input_shape(const nasrt_model* m, int* c, int* h, int* w);
int nasrt_model_classes(const nasrt_model* m);
int nasrt_model_paths(const nasrt_model* m);
int nasrt_model_threads(const nasrt_model* m);
/* The core thread slot `slot` is pinned to: -1 for the calling thread (slot 0,
 * never pinned) or a worker whose pinning failed (or that has more threads than
 * the process has cores); -2 for a bad slot. */
int nasrt_model_pinned_core(const nasrt_model* m, int slot);

/* input: batch x C x H x W float32 (NCHW, contiguous); logits: batch x classes.
 * 0 on success, else sets *error. Non-finite input and values beyond +-1e6 are
 * rejected (the net would overflow). */
int nasrt_model_run(nasrt_model* m, const float* input, int batch, float* logits, char** error);

/* A metadata string of the model file (a key of <nasrt/metadata_keys.h>, e.g. NASRT_KEY_CLASS_NAMES), or NULL. */
const char* nasrt_model_metadata(const nasrt_model* m, const char* key);
/* Convs and the backend each runs on: i in [0, nasrt_model_kernels(m)). */
int nasrt_model_kernels(const nasrt_model* m);
const char* nasrt_model_kernel_name(const nasrt_model* m, int i);
const char* nasrt_model_kernel_backend(const nasrt_model* m, int i);
/* What conv i computes in: "fp32", or "int8" (an int8 layer of a quantised model). */
const char* nasrt_model_kernel_precision(const nasrt_model* m, int i);
/* Why a tuning file was ignored at load ("" if none was, or none exists). */
const char* nasrt_model_notice(const nasrt_model* m);

void nasrt_model_free(nasrt_model* m);
void nasrt_error_free(char* error);

/* "0.2.0" */
const char* nasrt_version(void);
/* Compiled kernel backends, comma-separated, e.g. "onednn,xnnpack,reference". */
const char* nasrt_backends(void);
/* The host as tuning files record it: "CPU model | isa | backends". */
const char* nasrt_cpu_signature(void);

#ifdef __cplusplus
}
#endif
#endif /* NASRT_NASRT_H */
