/* classify MODEL INPUT.bin [THREADS] [LOGITS_OUT.bin]: one sample (C x H x W float32,
 * already normalised) through a model.nasrt with the C API; prints the best class. */
#include <stdio.h>
#include <stdlib.h>

#include <nasrt/metadata_keys.h>
#include <nasrt/nasrt.h>

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s MODEL.nasrt INPUT.bin [THREADS] [LOGITS_OUT.bin]\n", argv[0]);
    return 2;
  }
  char* err = NULL;
  nasrt_model* m = nasrt_model_load(argv[1], argc > 3 ? atoi(argv[3]) : 0, &err);
  if (!m) {
    fprintf(stderr, "%s\n", err);
    nasrt_error_free(err);
    return 1;
  }
  int c, h, w;
  nasrt_model_input_shape(m, &c, &h, &w);
  const int classes = nasrt_model_classes(m);
  float* x = malloc(sizeof(float) * c * h * w);
  float* logits = malloc(sizeof(float) * classes);
  FILE* f = fopen(argv[2], "rb");
  if (!f || fread(x, sizeof(float), (size_t)c * h * w, f) != (size_t)c * h * w) {
    fprintf(stderr, "%s: need %d x %d x %d float32 values\n", argv[2], c, h, w);
    return 1;
  }
  fclose(f);
  if (nasrt_model_run(m, x, 1, logits, &err) != 0) {
    fprintf(stderr, "%s\n", err);
    nasrt_error_free(err);
    return 1;
  }
  int best = 0;
  for (int k = 1; k < classes; ++k)
    if (logits[k] > logits[best]) best = k;
  printf("class %d (logit %.4f) on %d thread(s)\n", best, logits[best], nasrt_model_threads(m));
  /* The metadata keys come from the installed <nasrt/metadata_keys.h>, the same list Python reads. */
  const char* names = nasrt_model_metadata(m, NASRT_KEY_CLASS_NAMES);
  if (names) printf("class names: %s\n", names);
  if (argc > 4) {
    FILE* o = fopen(argv[4], "wb");
    if (!o || fwrite(logits, sizeof(float), classes, o) != (size_t)classes) return 1;
    fclose(o);
  }
  free(x);
  free(logits);
  nasrt_model_free(m);
  return 0;
}
