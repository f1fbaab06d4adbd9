/*
 * Latency of a null ioctl on a file, for scripts/bench_ioctl.
 *
 *   ioctl_latency PATH [N [WARMUP]]      (defaults: N 100000, WARMUP 5000)
 *
 * Opens PATH (O_RDWR), issues WARMUP untimed then N timed ioctl(fd, 0x3B64, 0) calls
 * (VFIO_GET_API_VERSION, which must return 0), timing each one with
 * clock_gettime(CLOCK_MONOTONIC). Prints one line of key=value pairs, in microseconds:
 *
 *   n=100000 min_us=... p50_us=... p90_us=... p99_us=... p999_us=... max_us=... mean_us=...
 *
 * Percentiles are nearest-rank over the N samples. Exit status 1 on any failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define VFIO_GET_API_VERSION 0x3B64ul

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Nearest-rank percentile of sorted samples, in microseconds. */
static double pct_us(const uint64_t *s, long n, double p)
{
	long rank = (long)(p / 100.0 * (double)n + 0.999999999);

	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return (double)s[rank - 1] / 1000.0;
}

static long parse_count(const char *s, const char *what, long min)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < min) {
		fprintf(stderr, "ioctl_latency: bad %s %s\n", what, s);
		exit(2);
	}
	return v;
}

int main(int argc, char *argv[])
{
	long n = 100000, warmup = 5000, i;
	uint64_t *samples, total = 0;
	int fd, r;

	if (argc < 2 || argc > 4) {
		fprintf(stderr, "usage: %s PATH [N [WARMUP]]\n", argv[0]);
		return 2;
	}
	if (argc > 2)
		n = parse_count(argv[2], "N", 1);
	if (argc > 3)
		warmup = parse_count(argv[3], "WARMUP", 0);
	samples = malloc(sizeof(*samples) * (size_t)n);
	if (samples == NULL) {
		perror("malloc");
		return 1;
	}
	fd = open(argv[1], O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "ioctl_latency: open %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	for (i = 0; i < warmup; i++) {
		r = ioctl(fd, VFIO_GET_API_VERSION, 0);
		if (r != 0) {
			fprintf(stderr, "ioctl_latency: warm-up ioctl returned %d (%s)\n", r,
				r < 0 ? strerror(errno) : "expected 0");
			return 1;
		}
	}
	for (i = 0; i < n; i++) {
		uint64_t t0 = now_ns();
		r = ioctl(fd, VFIO_GET_API_VERSION, 0);
		uint64_t t1 = now_ns();
		if (r != 0) {
			fprintf(stderr, "ioctl_latency: ioctl %ld returned %d (%s)\n", i, r,
				r < 0 ? strerror(errno) : "expected 0");
			return 1;
		}
		samples[i] = t1 - t0;
		total += t1 - t0;
	}
	close(fd);
	qsort(samples, (size_t)n, sizeof(*samples), cmp_u64);
	printf("n=%ld min_us=%.3f p50_us=%.3f p90_us=%.3f p99_us=%.3f p999_us=%.3f max_us=%.3f "
	       "mean_us=%.3f\n", n, (double)samples[0] / 1000.0, pct_us(samples, n, 50),
	       pct_us(samples, n, 90), pct_us(samples, n, 99), pct_us(samples, n, 99.9),
	       (double)samples[n - 1] / 1000.0, (double)total / (double)n / 1000.0);
	free(samples);
	return 0;
}
