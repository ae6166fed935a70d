/*
 * The side-by-side peer of `bench transcribe`: whisper.cpp's own C API, built by
 * tests/setup.d/transcribe.sh from the very whisper.cpp source whisper-rs-sys vendors
 * (the crate does not ship whisper.cpp's examples/, so whisper-cli itself cannot be built
 * from it; this is whisper-cli's decode path without its argument parsing and WAV reader).
 *
 *   whisper_peer MODEL THREADS PROMPT MODE FILE.f32...
 *
 * FILE.f32: raw 16 kHz mono float32 little-endian. MODE: "utterance" decodes each file as one
 * segment (what the transcriber does per utterance), "batch" decodes a long file with
 * timestamps across 30 s windows (what whisper-cli does on a recording). Greedy decoding,
 * English, no temperature fallback, the given initial prompt: the transcriber's settings.
 * Prints one line per file: milliseconds of whisper_full, a tab, the text.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "whisper.h"

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)level; (void)text; (void)user;
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s MODEL THREADS PROMPT utterance|batch FILE.f32...\n", argv[0]);
        return 2;
    }
    whisper_log_set(quiet, NULL);
    struct whisper_context_params cparams = whisper_context_default_params();
    cparams.use_gpu = 0;
    struct whisper_context *ctx = whisper_init_from_file_with_params(argv[1], cparams);
    if (!ctx) {
        fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    int batch = strcmp(argv[4], "batch") == 0;
    for (int f = 5; f < argc; f++) {
        FILE *in = fopen(argv[f], "rb");
        if (!in) {
            fprintf(stderr, "cannot open %s\n", argv[f]);
            return 1;
        }
        fseek(in, 0, SEEK_END);
        long bytes = ftell(in);
        fseek(in, 0, SEEK_SET);
        int n = (int)(bytes / 4);
        float *pcm = malloc(sizeof(float) * (n > 17600 ? n : 17600));
        if (!pcm || fread(pcm, 4, n, in) != (size_t)n) {
            fprintf(stderr, "cannot read %s\n", argv[f]);
            return 1;
        }
        fclose(in);
        /* Like the transcriber: whisper.cpp ignores less than a second, so pad to 1.1 s. */
        while (n < 17600) pcm[n++] = 0.0f;

        struct whisper_full_params p = whisper_full_default_params(WHISPER_SAMPLING_GREEDY);
        p.n_threads = atoi(argv[2]);
        p.language = "en";
        p.translate = 0;
        p.no_context = 1;
        p.no_timestamps = batch ? 0 : 1;
        p.single_segment = batch ? 0 : 1;
        p.print_special = 0;
        p.print_progress = 0;
        p.print_realtime = 0;
        p.print_timestamps = 0;
        p.suppress_blank = 1;
        p.temperature_inc = 0.0f;
        p.greedy.best_of = 1;
        if (argv[3][0]) p.initial_prompt = argv[3];

        double t0 = now_ms();
        if (whisper_full(ctx, p, pcm, n) != 0) {
            fprintf(stderr, "whisper_full failed on %s\n", argv[f]);
            return 1;
        }
        double ms = now_ms() - t0;
        printf("%.1f\t", ms);
        int segments = whisper_full_n_segments(ctx);
        for (int i = 0; i < segments; i++) {
            printf("%s%s", i ? " " : "", whisper_full_get_segment_text(ctx, i));
        }
        printf("\n");
        fflush(stdout);
        free(pcm);
    }
    whisper_free(ctx);
    return 0;
}
