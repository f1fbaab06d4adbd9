/*
 * labels.h - one-line reports whose labels are unique, shared by the fidelity probes that print many
 * similar observations: "<label> = <ret>", "<label> = -1 <ERRNO>", "<label> = <text>"; the n-th
 * repetition of a label gets " #n", so the tests can compare outputs line by line and name a
 * pending line unambiguously. Include after "probe.h".
 */
#ifndef IOASIDFS_LABELS_H
#define IOASIDFS_LABELS_H

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

/*
 * Every printed label is unique: the n-th repetition of a label gets " #n".
 * 'cur' is the (decorated) label of the last observation.
 */
#define SEEN_MAX 8192
static uint64_t seen_hash[SEEN_MAX] __attribute__((unused));
static unsigned int seen_count[SEEN_MAX] __attribute__((unused));
static char cur[512] __attribute__((unused));

static inline const char *uniq(const char *label)
{
	uint64_t h = 1469598103934665603ULL;
	const char *s;
	unsigned int i;

	for (s = label; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	if (!h)
		h = 1;
	for (i = h % SEEN_MAX; seen_hash[i] && seen_hash[i] != h;
	     i = (i + 1) % SEEN_MAX)
		;
	seen_hash[i] = h;
	if (++seen_count[i] == 1)
		snprintf(cur, sizeof(cur), "%s", label);
	else
		snprintf(cur, sizeof(cur), "%s #%u", label, seen_count[i]);
	return cur;
}

static inline long report(const char *what, long ret, int err)
{
	uniq(what);
	if (ret < 0)
		printf("%s = -1 %s\n", cur, errname(err));
	else
		printf("%s = %ld\n", cur, ret);
	return ret;
}

/* A line that is not a call: "<label> = <text>", label made unique. */
static inline void note(const char *label, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static inline void note(const char *label, const char *fmt, ...)
{
	char text[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	uniq(label);
	printf("%s = %s\n", cur, text);
}

static inline long ioc(const char *what, int fd, unsigned long cmd, void *arg)
{
	long r;

	errno = 0;
	r = ioctl(fd, cmd, arg);
	return report(what, r, errno);
}

static inline long ioc_val(const char *what, int fd, unsigned long cmd,
		    unsigned long arg)
{
	long r;

	errno = 0;
	r = ioctl(fd, cmd, arg);
	return report(what, r, errno);
}

/* open() and close() reported like a call: "<label> = <fd or 0>" or "<label> = -1 <ERRNO>". */
static inline int open_report(const char *label, const char *path, int flags)
{
	int fd;

	errno = 0;
	fd = open(path, flags);
	report(label, fd, errno);
	return fd;
}

static inline void close_report(const char *label, int fd)
{
	errno = 0;
	report(label, close(fd), errno);
}

#endif /* IOASIDFS_LABELS_H */
