/*
 * device_ioctls.c - fidelity probe for the ioctls, reads and writes of a
 * vfio-pci device fd: QEMU's edu device (1234:11e8) at 0000:00:01.0 in IOMMU
 * group 1, reached through /dev/vfio/vfio and /dev/vfio/1.
 *
 * The validation matrix: GROUP_GET_DEVICE_FD name matching, DEVICE_GET_INFO
 * at several argsz, GET_REGION_INFO for every index, GET_IRQ_INFO for every
 * index, every SET_IRQS rule in the kernel's order (header, data, action,
 * then the INTx / MSI / MSI-X / ERR / REQ actions with DATA_NONE loopback
 * through eventfds), VFIO_DEVICE_RESET, the hot-reset ioctls, IOEVENTFD,
 * DEVICE_FEATURE, unknown ioctls, config space (virtualisation, BAR sizing,
 * out-of-range access) and BAR / ROM / VGA region access through
 * pread/pwrite.
 *
 * Prints one line per observation:
 *     <what> = <ret>            (success; the return value)
 *     <what> = -1 <ERRNONAME>   (failure)
 * followed, for calls that write a struct back, by one "<what>.out = ..."
 * line with the fields as they are afterwards (argument buffers are filled
 * with 0xa5 first, so 0xa5a5a5a5 means "not written").  Nothing printed
 * depends on addresses, pids or timing.  A label printed before gets " #n"
 * (its n-th use), so every line is unique; the same lines are printed
 * whatever the answers.  The program must start with only fds 0, 1 and 2.
 *
 * Only the 6.1 <linux/vfio.h> is assumed.
 * Build: gcc -O2 -Wall -Werror -o device_ioctls device_ioctls.c
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/vfio.h>
#include "probe.h"
#include "labels.h"

#define CONTAINER "/dev/vfio/vfio"
#define GROUP "/dev/vfio/1"
#define BDF "0000:00:01.0"
#define PG 0x1000UL

typedef unsigned long long ull;

/* Region offsets (vfio-pci: index << 40). */
#define REGION(i) ((off_t)(i) << 40)
#define BAR0 REGION(VFIO_PCI_BAR0_REGION_INDEX)
#define CFG REGION(VFIO_PCI_CONFIG_REGION_INDEX)

/* SET_IRQS flag shorthands */
#define D_NONE VFIO_IRQ_SET_DATA_NONE
#define D_BOOL VFIO_IRQ_SET_DATA_BOOL
#define D_EFD VFIO_IRQ_SET_DATA_EVENTFD
#define A_MASK VFIO_IRQ_SET_ACTION_MASK
#define A_UNMASK VFIO_IRQ_SET_ACTION_UNMASK
#define A_TRIG VFIO_IRQ_SET_ACTION_TRIGGER

/* ioctl numbers the 6.1 header does not define */
#define NR(n) _IO(VFIO_TYPE, VFIO_BASE + (n))
#define DEVICE_BIND_IOMMUFD NR(18)
#define DEVICE_ATTACH_IOMMUFD_PT NR(19)
#define DEVICE_DETACH_IOMMUFD_PT NR(20)

/* "<cur>.out = ..." for the call just reported. */
static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void out(const char *fmt, ...)
{
	va_list ap;

	printf("%s.out = ", cur);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

static uint32_t rd32(const void *b, size_t off)
{
	uint32_t v;

	memcpy(&v, (const unsigned char *)b + off, sizeof(v));
	return v;
}

static uint64_t rd64(const void *b, size_t off)
{
	uint64_t v;

	memcpy(&v, (const unsigned char *)b + off, sizeof(v));
	return v;
}

static void wr32(void *b, size_t off, uint32_t v)
{
	memcpy((unsigned char *)b + off, &v, sizeof(v));
}

static unsigned char abuf[4096];	/* ioctl argument buffer */

static void fill(uint32_t argsz)
{
	memset(abuf, 0xa5, sizeof(abuf));
	wr32(abuf, 0, argsz);
}

/* ------------------------------------------------------------------ */
/* region access                                                       */

static const char *region_name(off_t off)
{
	static char b[32];
	unsigned int idx = (unsigned int)((unsigned long long)off >> 40);

	switch (idx) {
	case 0: case 1: case 2: case 3: case 4: case 5:
		snprintf(b, sizeof(b), "BAR%u", idx);
		return b;
	case 6: return "ROM";
	case 7: return "CONFIG";
	case 8: return "VGA";
	default:
		snprintf(b, sizeof(b), "region%u", idx);
		return b;
	}
}

static void hexbytes(char *dst, size_t len, const unsigned char *b, long n)
{
	size_t used = 0;
	long i;

	dst[0] = 0;
	for (i = 0; i < n && used + 4 < len; i++)
		used += snprintf(dst + used, len - used, "%s%02x", i ? " " : "",
				 b[i]);
}

/*
 * pread of 'count' bytes at 'pos' of the region at 'region'; prints the
 * return value, then the bytes read (as hex, little-endian byte order, up
 * to 8 bytes) on the same line.
 */
static long rd(int fd, off_t region, uint64_t pos, size_t count)
{
	unsigned char b[64];
	char what[128], hex[200];
	ssize_t r;
	int e;

	memset(b, 0xa5, sizeof(b));
	snprintf(what, sizeof(what), "pread(%s+0x%llx,%zu)", region_name(region),
		 (ull)pos, count);
	errno = 0;
	r = pread(fd, b, count, region + (off_t)pos);
	e = errno;
	uniq(what);
	if (r < 0) {
		printf("%s = -1 %s\n", cur, errname(e));
		return -1;
	}
	hexbytes(hex, sizeof(hex), b, r < 8 ? r : 8);
	printf("%s = %zd [%s]\n", cur, r, hex);
	return r;
}

/* pread of a u32 (or u16 / u8 with count 2 / 1); ~0 on failure. */
static uint32_t rdv(int fd, off_t region, uint64_t pos, size_t count,
		    const char *name)
{
	uint32_t v = 0;
	char what[160];
	ssize_t r;

	snprintf(what, sizeof(what), "%s: pread(%s+0x%llx,%zu)", name,
		 region_name(region), (ull)pos, count);
	errno = 0;
	r = pread(fd, &v, count, region + (off_t)pos);
	uniq(what);
	if (r < 0) {
		printf("%s = -1 %s\n", cur, errname(errno));
		return ~0u;
	}
	printf("%s = %zd value=0x%x\n", cur, r, v);
	return v;
}

static long wrv(int fd, off_t region, uint64_t pos, size_t count,
		uint64_t val, const char *name)
{
	char what[192];
	ssize_t r;

	snprintf(what, sizeof(what), "%s: pwrite(%s+0x%llx,%zu,0x%llx)", name,
		 region_name(region), (ull)pos, count, (ull)val);
	errno = 0;
	r = pwrite(fd, &val, count, region + (off_t)pos);
	return report(what, r, errno);
}

/* The config space as 16 lines of 16 bytes. */
static void config_dump(int fd, const char *p)
{
	unsigned char b[256];
	char label[64], hex[64];
	ssize_t r;
	int row;

	memset(b, 0xa5, sizeof(b));
	errno = 0;
	r = pread(fd, b, sizeof(b), CFG);
	snprintf(label, sizeof(label), "%s: pread(CONFIG+0x0,256)", p);
	report(label, r, errno);
	for (row = 0; row < 16; row++) {
		hexbytes(hex, sizeof(hex), b + 16 * row, 16);
		snprintf(label, sizeof(label), "%s: config[0x%02x]", p, 16 * row);
		note(label, "%s", r == 256 ? hex : "-");
	}
}

/* ------------------------------------------------------------------ */
/* info ioctls                                                         */

static void device_info(int dfd, uint32_t argsz)
{
	char what[64];

	fill(argsz);
	snprintf(what, sizeof(what), "DEVICE_GET_INFO(argsz=%u)", argsz);
	ioc(what, dfd, VFIO_DEVICE_GET_INFO, abuf);
	out("argsz=%u flags=0x%x num_regions=0x%x num_irqs=0x%x cap_offset=0x%x u32@20=0x%x u32@24=0x%x",
	    rd32(abuf, 0), rd32(abuf, 4), rd32(abuf, 8), rd32(abuf, 12),
	    rd32(abuf, 16), rd32(abuf, 20), rd32(abuf, 24));
}

static void region_info(int dfd, uint32_t index, uint32_t argsz,
			uint32_t cap_offset_in)
{
	char what[96];

	fill(argsz);
	wr32(abuf, 4, 0x5a5a5a5a);		/* flags */
	wr32(abuf, 8, index);
	wr32(abuf, 12, cap_offset_in);
	if (argsz == 32 && cap_offset_in == 0x77)
		snprintf(what, sizeof(what), "GET_REGION_INFO(index=%u)", index);
	else
		snprintf(what, sizeof(what),
			 "GET_REGION_INFO(index=%u,argsz=%u,cap_offset=0x%x)",
			 index, argsz, cap_offset_in);
	ioc(what, dfd, VFIO_DEVICE_GET_REGION_INFO, abuf);
	out("argsz=%u flags=0x%x index=%u cap_offset=0x%x size=0x%llx offset=0x%llx u32@32=0x%x",
	    rd32(abuf, 0), rd32(abuf, 4), rd32(abuf, 8), rd32(abuf, 12),
	    (ull)rd64(abuf, 16), (ull)rd64(abuf, 24), rd32(abuf, 32));
}

static void irq_info(int dfd, uint32_t index, uint32_t argsz)
{
	char what[96];

	fill(argsz);
	wr32(abuf, 8, index);
	if (argsz == 16)
		snprintf(what, sizeof(what), "GET_IRQ_INFO(index=%u)", index);
	else
		snprintf(what, sizeof(what), "GET_IRQ_INFO(index=%u,argsz=%u)",
			 index, argsz);
	ioc(what, dfd, VFIO_DEVICE_GET_IRQ_INFO, abuf);
	out("argsz=%u flags=0x%x index=%u count=0x%x u32@16=0x%x",
	    rd32(abuf, 0), rd32(abuf, 4), rd32(abuf, 8), rd32(abuf, 12),
	    rd32(abuf, 16));
}

/* ------------------------------------------------------------------ */
/* SET_IRQS                                                            */

static const char *irq_name(uint32_t index)
{
	static char b[32];

	switch (index) {
	case 0: return "INTX";
	case 1: return "MSI";
	case 2: return "MSIX";
	case 3: return "ERR";
	case 4: return "REQ";
	default:
		snprintf(b, sizeof(b), "index%u", index);
		return b;
	}
}

static const char *set_flags(uint32_t f)
{
	static char b[128];
	static const char *names[] = { "NONE", "BOOL", "EVENTFD", "MASK",
				       "UNMASK", "TRIGGER" };
	unsigned int i;

	b[0] = 0;
	for (i = 0; i < 6; i++)
		if (f & (1u << i))
			snprintf(b + strlen(b), sizeof(b) - strlen(b), "%s%s",
				 b[0] ? "|" : "", names[i]);
	if (f & ~0x3fu)
		snprintf(b + strlen(b), sizeof(b) - strlen(b), "%s0x%x",
			 b[0] ? "|" : "", f & ~0x3fu);
	if (!b[0])
		snprintf(b, sizeof(b), "0");
	return b;
}

/*
 * SET_IRQS with a header and 'dlen' bytes of data right after it; argsz is
 * 20 + dlen unless 'argsz' is non-zero.  'desc' names the data.
 */
static long set_irqs_raw(const char *p, int dfd, uint32_t argsz, uint32_t flags,
			 uint32_t index, uint32_t start, uint32_t count,
			 const void *data, size_t dlen, const char *desc)
{
	struct vfio_irq_set *s = (struct vfio_irq_set *)abuf;
	char what[256];

	memset(abuf, 0, sizeof(abuf));
	s->argsz = argsz ? argsz : (uint32_t)(sizeof(*s) + dlen);
	s->flags = flags;
	s->index = index;
	s->start = start;
	s->count = count;
	if (dlen)
		memcpy(abuf + sizeof(*s), data, dlen);
	snprintf(what, sizeof(what), "%s: SET_IRQS(%s,%s,start=%u,count=%u", p,
		 irq_name(index), set_flags(flags), start, count);
	if (desc)
		snprintf(what + strlen(what), sizeof(what) - strlen(what), ",%s",
			 desc);
	if (argsz)
		snprintf(what + strlen(what), sizeof(what) - strlen(what),
			 ",argsz=%u", argsz);
	snprintf(what + strlen(what), sizeof(what) - strlen(what), ")");
	return ioc(what, dfd, VFIO_DEVICE_SET_IRQS, abuf);
}

static long set_none(const char *p, int dfd, uint32_t flags, uint32_t index,
		     uint32_t start, uint32_t count)
{
	return set_irqs_raw(p, dfd, 0, D_NONE | flags, index, start, count,
			    NULL, 0, NULL);
}

static long set_bool(const char *p, int dfd, uint32_t action, uint32_t index,
		     uint8_t v)
{
	char d[32];

	snprintf(d, sizeof(d), "bool=%u", v);
	return set_irqs_raw(p, dfd, 0, D_BOOL | action, index, 0, 1, &v, 1, d);
}

static long set_efd(const char *p, int dfd, uint32_t action, uint32_t index,
		    int32_t fd, const char *fdname)
{
	char d[64];

	snprintf(d, sizeof(d), "fd=%s", fdname);
	return set_irqs_raw(p, dfd, 0, D_EFD | action, index, 0, 1, &fd,
			    sizeof(fd), d);
}

/* Reads (and so resets) an EFD_NONBLOCK eventfd: "<name> = <count>|empty". */
static void efd_check(const char *p, int efd, const char *name)
{
	char label[160];
	uint64_t v = 0;
	ssize_t r;

	snprintf(label, sizeof(label), "%s: read(%s)", p, name);
	errno = 0;
	r = read(efd, &v, sizeof(v));
	if (r == sizeof(v))
		note(label, "%llu", (ull)v);
	else if (r < 0 && errno == EAGAIN)
		note(label, "empty");
	else
		note(label, "-1 %s", errname(errno));
}

/* ------------------------------------------------------------------ */

static int get_device_fd(const char *p, int gfd, const char *name,
			 const char *shown)
{
	char what[256];
	long r;

	snprintf(what, sizeof(what), "%s: GROUP_GET_DEVICE_FD(\"%s\")", p,
		 shown ? shown : name);
	errno = 0;
	r = ioctl(gfd, VFIO_GROUP_GET_DEVICE_FD, name);
	report(what, r, errno);
	return (int)r;
}

static void feature(int dfd, uint32_t argsz, uint32_t flags, const char *desc,
		    const void *data, size_t dlen)
{
	char what[160];

	memset(abuf, 0, sizeof(abuf));
	wr32(abuf, 0, argsz);
	wr32(abuf, 4, flags);
	if (dlen)
		memcpy(abuf + 8, data, dlen);
	snprintf(what, sizeof(what), "DEVICE_FEATURE(%s,argsz=%u)", desc, argsz);
	ioc(what, dfd, VFIO_DEVICE_FEATURE, abuf);
}

static void ioeventfd(int dfd, uint32_t argsz, uint32_t flags, off_t region,
		      uint64_t pos, uint64_t data, int32_t fd,
		      const char *fdname)
{
	struct vfio_device_ioeventfd ev;
	char what[192];

	memset(&ev, 0, sizeof(ev));
	ev.argsz = argsz;
	ev.flags = flags;
	ev.offset = (uint64_t)region + pos;
	ev.data = data;
	ev.fd = fd;
	snprintf(what, sizeof(what),
		 "IOEVENTFD(argsz=%u,flags=0x%x,%s+0x%llx,data=0x%llx,fd=%s)",
		 argsz, flags, region_name(region), (ull)pos, (ull)data, fdname);
	ioc(what, dfd, VFIO_DEVICE_IOEVENTFD, &ev);
}

int main(void)
{
	int cfd, gfd, dfd, dfd2, efd, efd2, pfd[2], r;
	unsigned char *pages;
	uint32_t i, bar0, cmd;
	const char *p;

	setvbuf(stdout, NULL, _IOLBF, 0);

	/* two pages, the second PROT_NONE: a SET_IRQS header at the end of
	 * the first has its data in the second */
	pages = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (pages == MAP_FAILED || mprotect(pages + PG, PG, PROT_NONE)) {
		perror("mmap");
		return 2;
	}
	memset(pages, 0, PG);
	if (pipe(pfd)) {
		perror("pipe");
		return 2;
	}
	efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	efd2 = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (efd < 0 || efd2 < 0) {
		perror("eventfd");
		return 2;
	}

	/* ---- setup and GET_DEVICE_FD name matching ---- */
	p = "setup";
	errno = 0;
	cfd = open(CONTAINER, O_RDWR);
	report("setup: open " CONTAINER, cfd, errno);
	errno = 0;
	gfd = open(GROUP, O_RDWR);
	report("setup: open " GROUP, gfd, errno);
	ioc("setup: GROUP_SET_CONTAINER", gfd, VFIO_GROUP_SET_CONTAINER, &cfd);
	ioc_val("setup: SET_IOMMU(TYPE1v2)", cfd, VFIO_SET_IOMMU,
		VFIO_TYPE1v2_IOMMU);

	p = "name";
	{
		/* names the kernel matches (or not); a returned fd is closed */
		static const char *const names[][2] = {
			{ "", NULL },
			{ "0000:00:01", NULL },
			{ "0000:00:01.1", NULL },
			{ "0000:00:01.00", NULL },
			{ BDF "x", NULL },
			{ BDF " ", NULL },
			{ BDF "  ", NULL },
			{ BDF " foo", NULL },
			{ BDF " vf_token", NULL },
			{ BDF " vf_token=", NULL },
			{ BDF " vf_token=00000000-0000-0000-0000-00000000000g", NULL },
			{ BDF " vf_token=00000000-0000-0000-0000-000000000000", NULL },
			{ BDF "\tfoo", "0000:00:01.0\\tfoo" },
			{ BDF "\n", "0000:00:01.0\\n" },
			{ "0000:00:01.0", NULL },
		};
		size_t n;

		for (n = 0; n < sizeof(names) / sizeof(names[0]); n++) {
			r = get_device_fd(p, gfd, names[n][0], names[n][1]);
			if (r >= 0)
				close(r);
		}
	}
	dfd = get_device_fd(p, gfd, BDF, NULL);
	errno = 0;
	r = fcntl(dfd, F_GETFD);
	report("name: fcntl(device,F_GETFD)", r, errno);
	errno = 0;
	r = fcntl(dfd, F_GETFL);
	if (r < 0)
		note("name: fcntl(device,F_GETFL) & (O_ACCMODE|O_NONBLOCK|O_APPEND)",
		     "-1 %s", errname(errno));
	else
		note("name: fcntl(device,F_GETFL) & (O_ACCMODE|O_NONBLOCK|O_APPEND)",
		     "0x%x", (unsigned int)r & (O_ACCMODE | O_NONBLOCK | O_APPEND));
	dfd2 = get_device_fd(p, gfd, BDF, "0000:00:01.0 (again)");
	errno = 0;
	r = close(dfd2);
	report("name: close(second device fd)", r, errno);
	ioc("name: GROUP_UNSET_CONTAINER (device open)", gfd,
	    VFIO_GROUP_UNSET_CONTAINER, NULL);

	/* ---- DEVICE_GET_INFO ---- */
	ioc("DEVICE_GET_INFO(NULL)", dfd, VFIO_DEVICE_GET_INFO, NULL);
	device_info(dfd, 0);
	device_info(dfd, 15);
	device_info(dfd, 16);
	device_info(dfd, 19);
	device_info(dfd, 20);
	device_info(dfd, 23);
	device_info(dfd, 24);
	device_info(dfd, 32);

	/* ---- GET_REGION_INFO ---- */
	ioc("GET_REGION_INFO(NULL)", dfd, VFIO_DEVICE_GET_REGION_INFO, NULL);
	for (i = 0; i <= 9; i++)
		region_info(dfd, i, 32, 0x77);
	region_info(dfd, 10, 32, 0x77);
	region_info(dfd, 0x7fffffff, 32, 0x77);
	region_info(dfd, 0xffffffff, 32, 0x77);
	region_info(dfd, 0, 31, 0x77);
	region_info(dfd, 0, 0, 0x77);
	region_info(dfd, 0, 4096, 0x77);
	region_info(dfd, 7, 32, 0);
	region_info(dfd, 7, 32, 0xffffffff);
	region_info(dfd, 1, 40, 0x20);

	/* ---- GET_IRQ_INFO ---- */
	ioc("GET_IRQ_INFO(NULL)", dfd, VFIO_DEVICE_GET_IRQ_INFO, NULL);
	for (i = 0; i <= 5; i++)
		irq_info(dfd, i, 16);
	irq_info(dfd, 0xffffffff, 16);
	irq_info(dfd, 0, 15);
	irq_info(dfd, 0, 0);
	irq_info(dfd, 1, 4096);

	/* ---- SET_IRQS: header, data and action validation ---- */
	p = "validate";
	ioc("validate: SET_IRQS(NULL)", dfd, VFIO_DEVICE_SET_IRQS, NULL);
	set_irqs_raw(p, dfd, 19, D_NONE | A_TRIG, 0, 0, 0, NULL, 0, NULL);
	set_irqs_raw(p, dfd, 0xffffffff, D_NONE | A_TRIG, 0, 0, 0, NULL, 0, NULL);
	set_none(p, dfd, A_TRIG, 5, 0, 0);
	set_none(p, dfd, A_TRIG, 0xffffffff, 0, 0);
	set_none(p, dfd, A_TRIG, 0, 0, 0xffffffff);
	set_none(p, dfd, A_TRIG, 0, 1, 0xfffffffe);
	set_none(p, dfd, A_TRIG, 0, 2, 0xfffffffd);
	set_none(p, dfd, A_TRIG, 0, 0xffffffff, 0);
	set_none(p, dfd, A_TRIG | 0x40, 0, 0, 0);
	set_none(p, dfd, A_TRIG | 0x80000000u, 0, 0, 0);
	set_none(p, dfd, A_TRIG, 0, 1, 0);
	set_none(p, dfd, A_TRIG, 0, 0, 2);
	set_none(p, dfd, A_TRIG, 1, 1, 0);
	set_none(p, dfd, A_TRIG, 1, 0, 2);
	set_none(p, dfd, A_TRIG, 2, 0, 0);
	set_none(p, dfd, A_TRIG, 3, 0, 0);
	set_none(p, dfd, A_TRIG, 4, 1, 0);
	set_irqs_raw(p, dfd, 0, A_TRIG, 0, 0, 0, NULL, 0, "no data type");
	set_irqs_raw(p, dfd, 0, D_NONE | D_BOOL | A_TRIG, 0, 0, 0, NULL, 0, NULL);
	set_irqs_raw(p, dfd, 0, D_BOOL | D_EFD | A_TRIG, 0, 0, 1, NULL, 0, NULL);
	set_irqs_raw(p, dfd, 20, D_BOOL | A_TRIG, 0, 0, 1, NULL, 0, "no data");
	set_irqs_raw(p, dfd, 23, D_EFD | A_TRIG, 0, 0, 1, "\xff\xff\xff", 3,
		     "3 bytes of fd");
	{
		/* the header fits, the fd after it is in a PROT_NONE page */
		struct vfio_irq_set *s =
			(struct vfio_irq_set *)(pages + PG - sizeof(*s));

		s->argsz = sizeof(*s) + 4;
		s->flags = D_EFD | A_TRIG;
		s->index = VFIO_PCI_INTX_IRQ_INDEX;
		s->start = 0;
		s->count = 1;
		ioc("validate: SET_IRQS(INTX,EVENTFD|TRIGGER,start=0,count=1,fd unreadable)",
		    dfd, VFIO_DEVICE_SET_IRQS, s);
		s->flags = D_EFD;
		ioc("validate: SET_IRQS(INTX,EVENTFD,start=0,count=1,fd unreadable)",
		    dfd, VFIO_DEVICE_SET_IRQS, s);
	}
	set_none(p, dfd, 0, 0, 0, 0);
	set_none(p, dfd, 0, 0, 0, 1);
	set_none(p, dfd, A_MASK | A_UNMASK, 0, 0, 1);
	set_none(p, dfd, A_MASK | A_TRIG, 0, 0, 1);
	set_none(p, dfd, A_MASK | A_UNMASK | A_TRIG, 0, 0, 1);
	set_none(p, dfd, A_MASK, 1, 0, 1);
	set_none(p, dfd, A_UNMASK, 1, 0, 1);
	set_none(p, dfd, A_MASK, 4, 0, 1);
	set_none(p, dfd, A_UNMASK, 4, 0, 1);
	set_efd(p, dfd, A_MASK, 1, efd, "efd");
	set_efd(p, dfd, A_MASK, 0, efd, "efd");

	/* ---- INTx ---- */
	p = "intx";
	set_none(p, dfd, A_TRIG, 0, 0, 0);		/* disable: not enabled */
	set_none(p, dfd, A_TRIG, 0, 0, 1);		/* loopback: not enabled */
	set_bool(p, dfd, A_TRIG, 0, 1);
	set_none(p, dfd, A_MASK, 0, 0, 1);
	set_none(p, dfd, A_UNMASK, 0, 0, 1);
	set_efd(p, dfd, A_UNMASK, 0, efd2, "efd2");
	set_efd(p, dfd, A_TRIG, 0, pfd[0], "pipe");
	set_efd(p, dfd, A_TRIG, 0, 1000, "1000 (closed)");
	set_efd(p, dfd, A_TRIG, 0, -2, "-2");
	set_none(p, dfd, A_TRIG, 0, 0, 0);		/* was it enabled? */
	set_efd(p, dfd, A_TRIG, 0, -1, "-1");
	set_none(p, dfd, A_TRIG, 0, 0, 1);		/* enabled, no trigger */
	set_efd(p, dfd, A_TRIG, 0, efd, "efd");		/* attach trigger */
	set_none(p, dfd, A_TRIG, 0, 0, 1);
	efd_check(p, efd, "efd");
	set_bool(p, dfd, A_TRIG, 0, 1);
	efd_check(p, efd, "efd");
	set_bool(p, dfd, A_TRIG, 0, 0);
	efd_check(p, efd, "efd");
	set_none(p, dfd, A_TRIG, 0, 0, 2);
	set_irqs_raw(p, dfd, 0, D_EFD | A_TRIG, 0, 0, 0, NULL, 0, NULL);
	set_efd(p, dfd, A_MASK, 0, efd, "efd");
	set_none(p, dfd, A_MASK, 0, 0, 1);
	set_bool(p, dfd, A_MASK, 0, 1);
	set_bool(p, dfd, A_MASK, 0, 0);
	set_none(p, dfd, A_MASK, 0, 0, 0);
	set_none(p, dfd, A_TRIG, 0, 0, 1);		/* loopback while masked */
	efd_check(p, efd, "efd");
	set_none(p, dfd, A_UNMASK, 0, 0, 1);
	efd_check(p, efd, "efd");
	set_bool(p, dfd, A_UNMASK, 0, 1);
	set_bool(p, dfd, A_UNMASK, 0, 0);
	set_efd(p, dfd, A_UNMASK, 0, pfd[0], "pipe");
	set_efd(p, dfd, A_UNMASK, 0, 1000, "1000 (closed)");
	set_efd(p, dfd, A_UNMASK, 0, efd2, "efd2");
	set_efd(p, dfd, A_UNMASK, 0, -1, "-1");
	set_efd(p, dfd, A_UNMASK, 0, -1, "-1");
	efd_check(p, efd2, "efd2");
	set_efd(p, dfd, A_TRIG, 0, efd2, "efd2");	/* swap the trigger */
	set_none(p, dfd, A_TRIG, 0, 0, 1);
	efd_check(p, efd, "efd");
	efd_check(p, efd2, "efd2");
	set_efd(p, dfd, A_TRIG, 0, pfd[0], "pipe");	/* bad swap */
	set_none(p, dfd, A_TRIG, 0, 0, 1);		/* still enabled? */
	efd_check(p, efd2, "efd2");
	set_efd(p, dfd, A_TRIG, 1, efd, "efd");		/* MSI while INTx */
	set_none(p, dfd, A_TRIG, 1, 0, 0);
	set_none(p, dfd, A_TRIG, 0, 0, 0);		/* disable */
	set_none(p, dfd, A_TRIG, 0, 0, 0);
	set_none(p, dfd, A_UNMASK, 0, 0, 1);

	/* ---- MSI ---- */
	p = "msi";
	set_none(p, dfd, A_TRIG, 1, 0, 0);		/* disable: not enabled */
	set_none(p, dfd, A_TRIG, 1, 0, 1);		/* loopback: not enabled */
	set_efd(p, dfd, A_TRIG, 1, pfd[0], "pipe");
	set_efd(p, dfd, A_TRIG, 1, 1000, "1000 (closed)");
	set_none(p, dfd, A_TRIG, 1, 0, 0);		/* left enabled? */
	set_efd(p, dfd, A_TRIG, 1, -1, "-1");		/* enable, no vector */
	set_none(p, dfd, A_TRIG, 1, 0, 1);
	set_efd(p, dfd, A_TRIG, 1, efd, "efd");
	set_none(p, dfd, A_TRIG, 1, 0, 1);
	efd_check(p, efd, "efd");
	set_bool(p, dfd, A_TRIG, 1, 1);
	efd_check(p, efd, "efd");
	set_bool(p, dfd, A_TRIG, 1, 0);
	efd_check(p, efd, "efd");
	set_none(p, dfd, A_TRIG, 1, 0, 2);
	set_efd(p, dfd, A_TRIG, 1, pfd[0], "pipe");	/* bad update */
	set_none(p, dfd, A_TRIG, 1, 0, 1);		/* vector detached? */
	efd_check(p, efd, "efd");
	set_efd(p, dfd, A_TRIG, 1, efd2, "efd2");
	set_none(p, dfd, A_TRIG, 1, 0, 1);
	efd_check(p, efd, "efd");
	efd_check(p, efd2, "efd2");
	set_efd(p, dfd, A_TRIG, 0, efd, "efd");		/* INTx while MSI */
	set_none(p, dfd, A_TRIG, 0, 0, 0);
	set_none(p, dfd, A_MASK, 0, 0, 1);
	set_none(p, dfd, A_TRIG, 2, 0, 0);		/* MSI-X: count 0 */
	set_none(p, dfd, A_TRIG, 1, 0, 0);		/* disable */
	set_none(p, dfd, A_TRIG, 1, 0, 0);
	set_none(p, dfd, A_TRIG, 1, 0, 1);

	/* ---- ERR and REQ ---- */
	p = "err";
	set_efd(p, dfd, A_TRIG, 3, efd, "efd");
	set_none(p, dfd, A_TRIG, 3, 0, 1);
	p = "req";
	set_none(p, dfd, A_TRIG, 4, 0, 0);		/* nothing registered */
	set_none(p, dfd, A_TRIG, 4, 0, 1);
	set_irqs_raw(p, dfd, 0, D_BOOL | A_TRIG, 4, 0, 0, NULL, 0, NULL);
	set_bool(p, dfd, A_TRIG, 4, 1);
	set_irqs_raw(p, dfd, 0, D_EFD | A_TRIG, 4, 0, 0, NULL, 0, NULL);
	set_efd(p, dfd, A_TRIG, 4, -1, "-1");
	set_efd(p, dfd, A_TRIG, 4, -2, "-2");
	set_efd(p, dfd, A_TRIG, 4, pfd[0], "pipe");
	set_efd(p, dfd, A_TRIG, 4, 1000, "1000 (closed)");
	set_efd(p, dfd, A_TRIG, 4, efd, "efd");
	set_none(p, dfd, A_TRIG, 4, 0, 1);
	efd_check(p, efd, "efd");
	set_bool(p, dfd, A_TRIG, 4, 1);
	efd_check(p, efd, "efd");
	set_efd(p, dfd, A_TRIG, 4, -2, "-2");		/* keeps efd? */
	set_none(p, dfd, A_TRIG, 4, 0, 1);
	efd_check(p, efd, "efd");
	set_none(p, dfd, A_TRIG, 4, 0, 0);		/* unregister */
	set_none(p, dfd, A_TRIG, 4, 0, 1);
	set_none(p, dfd, A_TRIG, 4, 0, 0);
	set_efd(p, dfd, A_TRIG, 4, efd, "efd");
	set_efd(p, dfd, A_TRIG, 4, -1, "-1");
	set_none(p, dfd, A_TRIG, 4, 0, 1);
	efd_check(p, efd, "efd");

	/* ---- reset ---- */
	ioc("DEVICE_RESET", dfd, VFIO_DEVICE_RESET, NULL);
	fill(12);
	ioc("GET_PCI_HOT_RESET_INFO(argsz=12)", dfd,
	    VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, abuf);
	out("argsz=%u flags=0x%x count=0x%x", rd32(abuf, 0), rd32(abuf, 4),
	    rd32(abuf, 8));
	fill(11);
	ioc("GET_PCI_HOT_RESET_INFO(argsz=11)", dfd,
	    VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, abuf);
	fill(4096);
	ioc("GET_PCI_HOT_RESET_INFO(argsz=4096)", dfd,
	    VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, abuf);
	out("argsz=%u flags=0x%x count=0x%x", rd32(abuf, 0), rd32(abuf, 4),
	    rd32(abuf, 8));
	ioc("GET_PCI_HOT_RESET_INFO(NULL)", dfd,
	    VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, NULL);
	{
		struct { uint32_t argsz, flags, count; int32_t fds[1]; } h;

		memset(&h, 0, sizeof(h));
		h.argsz = 11;
		ioc("PCI_HOT_RESET(argsz=11)", dfd, VFIO_DEVICE_PCI_HOT_RESET, &h);
		h.argsz = 16;
		h.flags = 1;
		ioc("PCI_HOT_RESET(flags=1)", dfd, VFIO_DEVICE_PCI_HOT_RESET, &h);
		h.flags = 0;
		h.count = 0;
		ioc("PCI_HOT_RESET(count=0)", dfd, VFIO_DEVICE_PCI_HOT_RESET, &h);
		h.count = 1;
		h.fds[0] = gfd;
		ioc("PCI_HOT_RESET(count=1,group fd)", dfd,
		    VFIO_DEVICE_PCI_HOT_RESET, &h);
		h.count = 2;
		ioc("PCI_HOT_RESET(count=2)", dfd, VFIO_DEVICE_PCI_HOT_RESET, &h);
	}

	/* ---- IOEVENTFD ---- */
	{
		uint32_t sz = sizeof(struct vfio_device_ioeventfd);

		ioc("IOEVENTFD(NULL)", dfd, VFIO_DEVICE_IOEVENTFD, NULL);
		ioeventfd(dfd, 27, 4, BAR0, 0x4, 0, efd, "efd");
		ioeventfd(dfd, 28, 4, BAR0, 0x4, 0, -1, "-1");
		ioeventfd(dfd, sz, 0x10 | 4, BAR0, 0x4, 0, efd, "efd");
		ioeventfd(dfd, sz, 0, BAR0, 0x4, 0, efd, "efd");
		ioeventfd(dfd, sz, 3, BAR0, 0x4, 0, efd, "efd");
		ioeventfd(dfd, sz, 4, BAR0, 0x4, 0, -2, "-2");
		ioeventfd(dfd, sz, 4, CFG, 0x4, 0, efd, "efd");
		ioeventfd(dfd, sz, 4, REGION(1), 0x0, 0, efd, "efd");
		ioeventfd(dfd, sz, 4, REGION(6), 0x0, 0, efd, "efd");
		ioeventfd(dfd, sz, 4, BAR0, 0xffffe, 0, efd, "efd");
		ioeventfd(dfd, sz, 4, BAR0, 0xffffc, 0, -1, "-1");
		ioeventfd(dfd, sz, 8, BAR0, 0x80, 0, efd, "efd");
		ioeventfd(dfd, sz, 4, BAR0, 0x4, 0x1234, pfd[0], "pipe");
		ioeventfd(dfd, sz, 4, BAR0, 0x4, 0x1234, 1000, "1000 (closed)");
		ioeventfd(dfd, sz, 4, BAR0, 0x4, 0x1234, efd, "efd");
		ioeventfd(dfd, sz, 4, BAR0, 0x4, 0x1234, efd2, "efd2");
		ioeventfd(dfd, sz, 4, BAR0, 0x4, 0x1235, efd2, "efd2");
		ioeventfd(dfd, sz, 2, BAR0, 0x4, 0x1234, efd2, "efd2");
		ioeventfd(dfd, sz, 4, BAR0, 0x4, 0x1234, -1, "-1");
		ioeventfd(dfd, sz, 4, BAR0, 0x4, 0x1234, -1, "-1");
		ioeventfd(dfd, sz, 4, BAR0, 0x4, 0x1235, -1, "-1");
		ioeventfd(dfd, sz, 2, BAR0, 0x4, 0x1234, -1, "-1");
		ioeventfd(dfd, sz, 8, BAR0, 0x80, 0, -1, "-1");
		ioeventfd(dfd, sz, 8, BAR0, 0x80, 0, -1, "-1");
	}

	/* ---- DEVICE_FEATURE ---- */
	{
		uint32_t G = VFIO_DEVICE_FEATURE_GET, S = VFIO_DEVICE_FEATURE_SET,
			 P = VFIO_DEVICE_FEATURE_PROBE;
		char desc[64];
		int32_t wake[2] = { -1, 0 };	/* wakeup_eventfd, reserved */

		ioc("DEVICE_FEATURE(NULL)", dfd, VFIO_DEVICE_FEATURE, NULL);
		feature(dfd, 7, P | G | 3, "PROBE|GET|3", NULL, 0);
		feature(dfd, 8, (1u << 19) | P | S | 3, "1<<19|PROBE|SET|3", NULL, 0);
		feature(dfd, 8, G | S | 3, "GET|SET|3", NULL, 0);
		feature(dfd, 8, G | S | 0xffff, "GET|SET|0xffff", NULL, 0);
		for (i = 0; i <= 10; i++) {
			snprintf(desc, sizeof(desc), "PROBE|GET|%u", i);
			feature(dfd, 8, P | G | i, desc, NULL, 0);
			snprintf(desc, sizeof(desc), "PROBE|SET|%u", i);
			feature(dfd, 8, P | S | i, desc, NULL, 0);
		}
		feature(dfd, 8, P | 0xffff, "PROBE|0xffff", NULL, 0);
		feature(dfd, 8, P | 3, "PROBE|3", NULL, 0);
		feature(dfd, 8, P | G | S | 3, "PROBE|GET|SET|3", NULL, 0);
		feature(dfd, 8, 3, "3", NULL, 0);
		feature(dfd, 8, P | S | 4, "PROBE|SET|4 (no data)", NULL, 0);
		feature(dfd, 8, S | 4, "SET|4 (no data)", NULL, 0);
		wake[0] = efd2;
		feature(dfd, 12, S | 4, "SET|4,wakeup_eventfd=efd2 (short)", wake, 4);
		wake[0] = -1;
		feature(dfd, 16, S | 4, "SET|4,wakeup_eventfd=-1", wake, 8);
		wake[0] = pfd[0];
		feature(dfd, 16, S | 4, "SET|4,wakeup_eventfd=pipe", wake, 8);
		wake[0] = 1000;
		feature(dfd, 16, S | 4, "SET|4,wakeup_eventfd=1000 (closed)", wake, 8);
		feature(dfd, 8, S | 0, "SET|0 (no uuid)", NULL, 0);
		feature(dfd, 8, S | 5, "SET|5", NULL, 0);
		feature(dfd, 8, S | 3, "SET|3", NULL, 0);
		feature(dfd, 8, S | 3, "SET|3", NULL, 0);
		feature(dfd, 8, S | 5, "SET|5", NULL, 0);
		feature(dfd, 8, S | 5, "SET|5", NULL, 0);
		wake[0] = efd2;
		/* (after a wakeup entry, any ioctl that resumes the device
		 * leaves low power: only EXIT is deterministic here) */
		feature(dfd, 16, S | 4, "SET|4,wakeup_eventfd=efd2", wake, 8);
		feature(dfd, 8, S | 5, "SET|5", NULL, 0);
		feature(dfd, 8, S | 5, "SET|5", NULL, 0);
	}

	/* ---- unknown and foreign ioctls ---- */
	ioc("ioctl(VFIO_GET_API_VERSION)", dfd, VFIO_GET_API_VERSION, NULL);
	ioc("ioctl(VFIO_CHECK_EXTENSION)", dfd, VFIO_CHECK_EXTENSION, NULL);
	ioc("ioctl(VFIO_GROUP_GET_STATUS)", dfd, VFIO_GROUP_GET_STATUS, abuf);
	ioc("ioctl(VFIO_GROUP_GET_DEVICE_FD)", dfd, VFIO_GROUP_GET_DEVICE_FD,
	    (void *)BDF);
	ioc("ioctl(VFIO_DEVICE_QUERY_GFX_PLANE)", dfd,
	    VFIO_DEVICE_QUERY_GFX_PLANE, abuf);
	ioc("ioctl(VFIO_DEVICE_GET_GFX_DMABUF)", dfd,
	    VFIO_DEVICE_GET_GFX_DMABUF, abuf);
	{
		/* vfio_device_bind_iommufd {argsz, flags, iommufd, out_devid} */
		uint32_t bind[4] = { 16, 0, (uint32_t)-1, 0 };
		uint32_t attach[3] = { 12, 0, 0 };

		ioc("ioctl(DEVICE_BIND_IOMMUFD,iommufd=-1)", dfd,
		    DEVICE_BIND_IOMMUFD, bind);
		ioc("ioctl(DEVICE_ATTACH_IOMMUFD_PT)", dfd,
		    DEVICE_ATTACH_IOMMUFD_PT, attach);
		ioc("ioctl(DEVICE_DETACH_IOMMUFD_PT)", dfd,
		    DEVICE_DETACH_IOMMUFD_PT, attach);
	}
	ioc("ioctl(_IO(';',100+21))", dfd, NR(21), abuf);
	ioc("ioctl(_IO(';',100+22))", dfd, NR(22), abuf);
	ioc("ioctl(_IO(';',99))", dfd, _IO(VFIO_TYPE, 99), abuf);
	ioc("ioctl(_IOR(';',107,20))", dfd,
	    _IOR(VFIO_TYPE, 107, struct vfio_device_info), abuf);
	ioc("ioctl(FIONREAD)", dfd, FIONREAD, abuf);
	ioc("ioctl(FIONBIO)", dfd, FIONBIO, abuf);
	ioc("ioctl(FIOCLEX)", dfd, FIOCLEX, NULL);

	/* ---- config space ---- */
	p = "cfg";
	config_dump(dfd, "cfg(open)");
	rd(dfd, CFG, 0, 0);
	rd(dfd, CFG, 0, 1);
	rd(dfd, CFG, 0, 2);
	rd(dfd, CFG, 0, 4);
	rd(dfd, CFG, 0, 8);
	rd(dfd, CFG, 1, 4);
	rd(dfd, CFG, 3, 2);
	rd(dfd, CFG, 0x3e, 4);
	rd(dfd, CFG, 0xfc, 4);
	rd(dfd, CFG, 0xfd, 4);
	rd(dfd, CFG, 0xff, 1);
	rd(dfd, CFG, 0x100, 1);
	rd(dfd, CFG, 0x100, 0);
	rd(dfd, CFG, 0x1000, 4);
	rd(dfd, CFG, 0xffffffffffULL, 1);
	rd(dfd, CFG, 0, 4096);
	wrv(dfd, CFG, 0x100, 4, 0, p);
	wrv(dfd, CFG, 0xfe, 4, 0, p);
	wrv(dfd, CFG, 0x50, 0, 0, p);

	/* IDs, class, header type: read-only */
	wrv(dfd, CFG, 0x00, 4, 0x12345678, p);
	rdv(dfd, CFG, 0x00, 4, p);
	wrv(dfd, CFG, 0x08, 4, 0xffffffff, p);
	rdv(dfd, CFG, 0x08, 4, p);
	wrv(dfd, CFG, 0x0c, 4, 0xffffffff, p);
	rdv(dfd, CFG, 0x0c, 4, p);
	wrv(dfd, CFG, 0x2c, 4, 0xffffffff, p);
	rdv(dfd, CFG, 0x2c, 4, p);
	wrv(dfd, CFG, 0x34, 1, 0x80, p);
	rdv(dfd, CFG, 0x34, 1, p);
	/* interrupt line (virtual, writable) and pin (read-only) */
	wrv(dfd, CFG, 0x3c, 1, 0x55, p);
	rdv(dfd, CFG, 0x3c, 2, p);
	wrv(dfd, CFG, 0x3d, 1, 0x04, p);
	rdv(dfd, CFG, 0x3c, 2, p);
	wrv(dfd, CFG, 0x3c, 4, 0xffffffff, p);
	rdv(dfd, CFG, 0x3c, 4, p);
	/* command and status */
	cmd = rdv(dfd, CFG, 0x04, 2, p);
	rdv(dfd, CFG, 0x06, 2, p);
	wrv(dfd, CFG, 0x04, 2, 0x0000, p);
	rdv(dfd, CFG, 0x04, 2, p);
	rd(dfd, BAR0, 0, 4);			/* memory decode off */
	wrv(dfd, BAR0, 4, 4, 0x1, p);
	wrv(dfd, CFG, 0x04, 2, 0xffff, p);
	rdv(dfd, CFG, 0x04, 2, p);
	wrv(dfd, CFG, 0x04, 2, 0x0002, p);
	rdv(dfd, CFG, 0x04, 2, p);
	rd(dfd, BAR0, 0, 4);			/* memory decode on */
	wrv(dfd, CFG, 0x06, 2, 0xffff, p);	/* status: RW1C bits */
	rdv(dfd, CFG, 0x06, 2, p);
	wrv(dfd, CFG, 0x04, 2, cmd, p);
	rdv(dfd, CFG, 0x04, 2, p);
	/* BAR sizing */
	bar0 = rdv(dfd, CFG, 0x10, 4, p);
	wrv(dfd, CFG, 0x10, 4, 0xffffffff, p);
	rdv(dfd, CFG, 0x10, 4, p);
	wrv(dfd, CFG, 0x10, 4, 0x12345678, p);
	rdv(dfd, CFG, 0x10, 4, p);
	wrv(dfd, CFG, 0x10, 4, bar0, p);
	rdv(dfd, CFG, 0x10, 4, p);
	for (i = 1; i < 6; i++) {
		wrv(dfd, CFG, 0x10 + 4 * i, 4, 0xffffffff, p);
		rdv(dfd, CFG, 0x10 + 4 * i, 4, p);
	}
	wrv(dfd, CFG, 0x30, 4, 0xffffffff, p);
	rdv(dfd, CFG, 0x30, 4, p);
	wrv(dfd, CFG, 0x30, 4, 0xfffff801, p);
	rdv(dfd, CFG, 0x30, 4, p);
	wrv(dfd, CFG, 0x30, 4, 0, p);
	/* cache line size, latency timer, BIST */
	wrv(dfd, CFG, 0x0c, 1, 0x10, p);
	wrv(dfd, CFG, 0x0d, 1, 0x40, p);
	rdv(dfd, CFG, 0x0c, 4, p);
	/* the MSI capability at 0x40 */
	rdv(dfd, CFG, 0x40, 4, p);
	wrv(dfd, CFG, 0x40, 1, 0x11, p);	/* cap id: read-only */
	wrv(dfd, CFG, 0x41, 1, 0x80, p);	/* next: read-only */
	rdv(dfd, CFG, 0x40, 2, p);
	wrv(dfd, CFG, 0x42, 2, 0xffff, p);	/* control */
	rdv(dfd, CFG, 0x42, 2, p);
	wrv(dfd, CFG, 0x42, 2, 0x0000, p);
	rdv(dfd, CFG, 0x42, 2, p);
	wrv(dfd, CFG, 0x44, 4, 0xffffffff, p);	/* address lo */
	rdv(dfd, CFG, 0x44, 4, p);
	wrv(dfd, CFG, 0x48, 4, 0xffffffff, p);	/* address hi */
	rdv(dfd, CFG, 0x48, 4, p);
	wrv(dfd, CFG, 0x4c, 2, 0xffff, p);	/* data */
	rdv(dfd, CFG, 0x4c, 4, p);
	wrv(dfd, CFG, 0x44, 4, 0xfee00000, p);
	wrv(dfd, CFG, 0x48, 4, 0, p);
	wrv(dfd, CFG, 0x4c, 2, 0x4041, p);
	rdv(dfd, CFG, 0x44, 4, p);
	rdv(dfd, CFG, 0x4c, 2, p);
	/* beyond the capability: raw device config space */
	rdv(dfd, CFG, 0x50, 4, p);
	wrv(dfd, CFG, 0x50, 4, 0xffffffff, p);
	rdv(dfd, CFG, 0x50, 4, p);
	wrv(dfd, CFG, 0xfc, 4, 0xffffffff, p);
	rdv(dfd, CFG, 0xfc, 4, p);
	config_dump(dfd, "cfg(after)");

	/* ---- BAR0 and the other regions ---- */
	p = "bar";
	rd(dfd, BAR0, 0, 0);
	rd(dfd, BAR0, 0, 4);
	rd(dfd, BAR0, 0, 2);
	rd(dfd, BAR0, 0, 1);
	rd(dfd, BAR0, 1, 4);
	rd(dfd, BAR0, 0, 8);
	rd(dfd, BAR0, 0x80, 8);
	rd(dfd, BAR0, 0x80, 4);
	rd(dfd, BAR0, 0x84, 4);
	rd(dfd, BAR0, 0x40000, 4);
	rd(dfd, BAR0, 0xffffc, 4);
	rd(dfd, BAR0, 0xffffc, 8);
	rd(dfd, BAR0, 0xfffff, 4);
	rd(dfd, BAR0, 0x100000, 4);
	rd(dfd, BAR0, 0x100000, 0);
	rd(dfd, BAR0, 0xffffffffffULL, 4);
	wrv(dfd, BAR0, 0x04, 4, 0x11223344, p);
	rdv(dfd, BAR0, 0x04, 4, p);
	wrv(dfd, BAR0, 0x04, 2, 0x5566, p);	/* not size 4: ignored */
	rdv(dfd, BAR0, 0x04, 4, p);
	wrv(dfd, BAR0, 0x00, 8, 0x8877665544332211ULL, p);
	rdv(dfd, BAR0, 0x04, 4, p);
	rd(dfd, BAR0, 0x00, 8);
	wrv(dfd, BAR0, 0x80, 8, 0x0000000100002000ULL, p);
	rdv(dfd, BAR0, 0x80, 4, p);
	rd(dfd, BAR0, 0x80, 8);
	wrv(dfd, BAR0, 0x80, 4, 0, p);
	wrv(dfd, BAR0, 0x84, 4, 0, p);
	rd(dfd, BAR0, 0x80, 8);
	wrv(dfd, BAR0, 0x100000, 4, 0, p);
	wrv(dfd, BAR0, 0xffffe, 4, 0, p);
	wrv(dfd, BAR0, 0x0, 0, 0, p);
	for (i = 1; i <= 9; i++) {
		if (i == 7)
			continue;
		rd(dfd, REGION(i), 0, 4);
		wrv(dfd, REGION(i), 0, 4, 0, p);
	}
	rd(dfd, REGION(8), 0xa0000, 4);
	rd(dfd, REGION(8), 0x3c0, 1);
	rd(dfd, REGION(255), 0, 4);
	rd(dfd, REGION(0xffffff), 0, 4);
	{
		/* mmap of BAR0: MAP_SHARED only */
		void *m;
		long rr;

		errno = 0;
		m = mmap(NULL, 0x1000, PROT_READ | PROT_WRITE, MAP_PRIVATE,
			 dfd, BAR0);
		rr = m == MAP_FAILED ? -1 : 0;
		report("bar: mmap(BAR0,0x1000,MAP_PRIVATE)", rr, errno);
		if (m != MAP_FAILED)
			munmap(m, 0x1000);
		errno = 0;
		m = mmap(NULL, 0x1000, PROT_READ, MAP_SHARED, dfd, REGION(1));
		rr = m == MAP_FAILED ? -1 : 0;
		report("bar: mmap(BAR1,0x1000,MAP_SHARED)", rr, errno);
		if (m != MAP_FAILED)
			munmap(m, 0x1000);
		errno = 0;
		m = mmap(NULL, 0x1000, PROT_READ, MAP_SHARED, dfd, CFG);
		rr = m == MAP_FAILED ? -1 : 0;
		report("bar: mmap(CONFIG,0x1000,MAP_SHARED)", rr, errno);
		if (m != MAP_FAILED)
			munmap(m, 0x1000);
		errno = 0;
		m = mmap(NULL, 0x1000, PROT_READ | PROT_WRITE, MAP_SHARED, dfd,
			 BAR0);
		rr = m == MAP_FAILED ? -1 : 0;
		report("bar: mmap(BAR0,0x1000,MAP_SHARED)", rr, errno);
		if (m != MAP_FAILED) {
			note("bar: mmap(BAR0)[0x0] (identification)", "0x%08x",
			     *(volatile uint32_t *)m);
			*(volatile uint32_t *)((char *)m + 4) = 0x01020304;
			note("bar: mmap(BAR0)[0x4] after writing 0x01020304",
			     "0x%08x", *(volatile uint32_t *)((char *)m + 4));
			munmap(m, 0x1000);
		} else {
			note("bar: mmap(BAR0)[0x0] (identification)", "-");
			note("bar: mmap(BAR0)[0x4] after writing 0x01020304", "-");
		}
		errno = 0;
		m = mmap(NULL, 0x100000, PROT_READ, MAP_SHARED, dfd, BAR0);
		rr = m == MAP_FAILED ? -1 : 0;
		report("bar: mmap(BAR0,0x100000,MAP_SHARED)", rr, errno);
		if (m != MAP_FAILED)
			munmap(m, 0x100000);
		errno = 0;
		m = mmap(NULL, 0x2000, PROT_READ, MAP_SHARED, dfd,
			 BAR0 + 0xff000);
		rr = m == MAP_FAILED ? -1 : 0;
		report("bar: mmap(BAR0+0xff000,0x2000,MAP_SHARED)", rr, errno);
		if (m != MAP_FAILED)
			munmap(m, 0x2000);
	}

	/* ---- close ---- */
	p = "close";
	errno = 0;
	r = close(dfd);
	report("close: close(device)", r, errno);
	errno = 0;
	r = ioctl(dfd, VFIO_DEVICE_GET_INFO, abuf);
	report("close: DEVICE_GET_INFO(closed fd)", r, errno);
	ioc("close: GROUP_UNSET_CONTAINER", gfd, VFIO_GROUP_UNSET_CONTAINER, NULL);
	errno = 0;
	r = close(gfd);
	report("close: close(group)", r, errno);
	errno = 0;
	r = close(cfd);
	report("close: close(container)", r, errno);
	return 0;
}
