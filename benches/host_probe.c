/* The host probe quoted beside lavapipe figures in benches/RESULTS.md: how much of a shared 2-core VM
 * the benchmark had. Two threads each run 10 independent chains of 256-bit FMAs (GFLOP/s: an FMA counts
 * 2), then one thread copies 64 MiB ten times (GB/s: bytes copied per second).
 * Build: gcc -O2 -mavx2 -mfma -pthread benches/host_probe.c -o /tmp/host_probe */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ITERS 50000000L
#define CHAINS 10

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void *run(void *out) {
    __m256 a[CHAINS];
    for (int i = 0; i < CHAINS; i++) a[i] = _mm256_set1_ps(1.0f + i * 1e-3f);
    const __m256 m = _mm256_set1_ps(0.99999f), c = _mm256_set1_ps(1e-5f);
    for (long it = 0; it < ITERS; it++)
        for (int i = 0; i < CHAINS; i++) a[i] = _mm256_fmadd_ps(a[i], m, c);
    float s = 0, o[8];
    for (int i = 0; i < CHAINS; i++) {
        _mm256_storeu_ps(o, a[i]);
        s += o[0];
    }
    *(float *)out = s;
    return 0;
}

int main(void) {
    pthread_t t[2];
    float r[2];
    double t0 = now();
    for (int i = 0; i < 2; i++) pthread_create(&t[i], 0, run, &r[i]);
    for (int i = 0; i < 2; i++) pthread_join(t[i], 0);
    double dt = now() - t0;
    printf("fma %.1f GFLOP/s (%g)\n", 2.0 * ITERS * CHAINS * 8 * 2 / dt / 1e9, r[0] + r[1]);
    size_t n = 64 << 20;
    char *a = malloc(n), *b = malloc(n);
    memset(a, 1, n);
    memset(b, 2, n);
    t0 = now();
    for (int i = 0; i < 10; i++) {
        memcpy(b, a, n);
        a[i] = b[i + 1];
    }
    dt = now() - t0;
    printf("memcpy %.1f GB/s\n", 10.0 * n / dt / 1e9);
    return 0;
}
