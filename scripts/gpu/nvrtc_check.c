/* Compiles CUDA C++ kernel files with NVRTC, with the options CubeCL's CUDA runtime passes
 * (the architecture, the toolkit's include path, -lineinfo, C++17), prints NVRTC's log for
 * each one it refuses and writes the PTX of each one it accepts next to it (FILE.sm_ARCH.ptx)
 * for ptxas to report registers and spills. Used by compile-cuda.sh.
 *   nvrtc_check ARCH INCLUDE_DIR FILE...      (ARCH: 80, 90, ...) */
#include <nvrtc.h>
#include <stdio.h>
#include <stdlib.h>

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc(n + 1);
    if (text && fread(text, 1, n, f) != (size_t)n) { free(text); text = NULL; }
    if (text) text[n] = 0;
    fclose(f);
    return text;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s ARCH INCLUDE_DIR FILE...\n", argv[0]);
        return 2;
    }
    char arch[64], include[4096];
    snprintf(arch, sizeof arch, "--gpu-architecture=sm_%s", argv[1]);
    snprintf(include, sizeof include, "--include-path=%s", argv[2]);
    const char *options[] = {arch, include, "-lineinfo", "--std=c++17"};
    int failed = 0;
    for (int i = 3; i < argc; i++) {
        char *source = read_file(argv[i]);
        if (!source) { fprintf(stderr, "%s: cannot read\n", argv[i]); failed++; continue; }
        nvrtcProgram program;
        nvrtcResult result = nvrtcCreateProgram(&program, source, argv[i], 0, NULL, NULL);
        if (result == NVRTC_SUCCESS) result = nvrtcCompileProgram(program, 4, options);
        if (result != NVRTC_SUCCESS) {
            size_t size = 0;
            nvrtcGetProgramLogSize(program, &size);
            char *log = malloc(size + 1);
            nvrtcGetProgramLog(program, log);
            printf("FAILED sm_%s %s: %s\n%s\n", argv[1], argv[i], nvrtcGetErrorString(result), log);
            free(log);
            failed++;
        } else {
            size_t size = 0;
            nvrtcGetPTXSize(program, &size);
            char *ptx = malloc(size);
            nvrtcGetPTX(program, ptx);
            char path[4096];
            snprintf(path, sizeof path, "%s.sm_%s.ptx", argv[i], argv[1]);
            FILE *out = fopen(path, "wb");
            if (out) { fwrite(ptx, 1, size > 0 ? size - 1 : 0, out); fclose(out); }
            free(ptx);
            printf("ok sm_%s %s\n", argv[1], argv[i]);
        }
        nvrtcDestroyProgram(&program);
        free(source);
    }
    return failed > 0;
}
