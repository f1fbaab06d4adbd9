/*
 * latency.h - the measuring loop both map benchmarks share. For each N of the sizes (argv[2..],
 * default 0, 1000 and 60000) it grows the live set to N mappings at BACKGROUND_BASE with map(),
 * then times ITERATIONS (argv[1], default 2000) map()+unmap() pairs of one page at PROBE_IOVA
 * and prints "live=<N> <label>=<median µs per pair> p99_us=<99th percentile><suffix>".
 * The including file defines PAGE, map(), unmap() and die().
 */
#ifndef IOASIDFS_BENCH_LATENCY_H
#define IOASIDFS_BENCH_LATENCY_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define BACKGROUND_BASE 0x100000000UL /* live mappings live at 4 GiB and up */
#define PROBE_IOVA 0x10000UL          /* the timed pair maps and unmaps here */

static int map(unsigned long iova);
static int unmap(unsigned long iova);
static void die(const char *what);

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void measure(int argc, char **argv, const char *label, const char *suffix)
{
	int iterations = argc > 1 ? atoi(argv[1]) : 2000;
	long sizes[8] = { 0, 1000, 60000 };
	int nsizes = 3;
	long live = 0;

	if (argc > 2) {
		nsizes = 0;
		for (int i = 2; i < argc && nsizes < 8; i++)
			sizes[nsizes++] = atol(argv[i]);
	}
	double *samples = calloc(iterations, sizeof(double));
	if (!samples)
		die("calloc");
	for (int s = 0; s < nsizes; s++) {
		while (live < sizes[s])
			if (map(BACKGROUND_BASE + PAGE * live++))
				die("background map");
		for (int i = 0; i < iterations; i++) {
			struct timespec a, b;
			clock_gettime(CLOCK_MONOTONIC, &a);
			if (map(PROBE_IOVA) || unmap(PROBE_IOVA))
				die("timed map/unmap");
			clock_gettime(CLOCK_MONOTONIC, &b);
			samples[i] = (b.tv_sec - a.tv_sec) * 1e6 + (b.tv_nsec - a.tv_nsec) / 1e3;
		}
		qsort(samples, iterations, sizeof(double), cmp_double);
		printf("live=%ld %s=%.1f p99_us=%.1f%s\n", sizes[s], label, samples[iterations / 2],
		       samples[iterations * 99 / 100], suffix);
	}
	free(samples);
}

#endif
