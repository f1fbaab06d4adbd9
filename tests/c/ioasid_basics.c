/*
 * ioasid_basics.c - fidelity probe for the iommufd nodes (/dev/iommu and its
 * alias /dev/ioasid) and for a VFIO device cdev (/dev/vfio/devices/vfioN)
 * before VFIO_DEVICE_BIND_IOMMUFD.
 *
 * Prints one line per observation:
 *     <what> = <ret>            (success; the ioctl/syscall return value)
 *     <what> = -1 <ERRNONAME>   (failure)
 * Nothing printed depends on addresses, pids or timing.  fd numbers are
 * printed because they are meaningful: the program must start with only
 * 0, 1 and 2 open, so each node below is opened as fd 3 (every node is
 * closed before the next one is opened).  A missing node prints
 * "open <path> = -1 ENOENT" and its checks are skipped, so the program also
 * runs on kernels without iommufd (e.g. Debian 6.1).
 *
 * Usage: ioasid_basics [CDEV]   (default /dev/vfio/devices/vfio0)
 *
 * There is no <linux/iommufd.h> on the build machine and the 6.1
 * <linux/vfio.h> lacks the cdev ioctls: the constants are defined here.
 * Build: gcc -O2 -Wall -o ioasid_basics ioasid_basics.c
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/vfio.h>
#include "probe.h"

#ifndef VFIO_TYPE
#define VFIO_TYPE (';')
#endif
#ifndef VFIO_BASE
#define VFIO_BASE 100
#endif
#ifndef VFIO_IOMMU_ENABLE
#define VFIO_IOMMU_ENABLE _IO(VFIO_TYPE, VFIO_BASE + 15)
#endif
#ifndef VFIO_IOMMU_DISABLE
#define VFIO_IOMMU_DISABLE _IO(VFIO_TYPE, VFIO_BASE + 16)
#endif
#ifndef VFIO_IOMMU_DIRTY_PAGES
#define VFIO_IOMMU_DIRTY_PAGES _IO(VFIO_TYPE, VFIO_BASE + 17)
#endif
#ifndef VFIO_DEVICE_FEATURE
#define VFIO_DEVICE_FEATURE _IO(VFIO_TYPE, VFIO_BASE + 17)
#endif
#ifndef VFIO_DEVICE_BIND_IOMMUFD
#define VFIO_DEVICE_BIND_IOMMUFD _IO(VFIO_TYPE, VFIO_BASE + 18)
#endif
#ifndef VFIO_DEVICE_ATTACH_IOMMUFD_PT
#define VFIO_DEVICE_ATTACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 19)
#endif
#ifndef VFIO_DEVICE_DETACH_IOMMUFD_PT
#define VFIO_DEVICE_DETACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 20)
#endif
#ifndef VFIO_DMA_MAP_FLAG_VADDR
#define VFIO_DMA_MAP_FLAG_VADDR (1 << 2)
#endif
#ifndef VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP
#define VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP (1 << 0)
#endif
#ifndef IOMMUFD_TYPE
#define IOMMUFD_TYPE (';')
#endif
#ifndef IOMMU_DESTROY
#define IOMMU_DESTROY _IO(IOMMUFD_TYPE, 0x80)
#endif
#ifndef TCGETS
#define TCGETS 0x5401
#endif
#ifndef FIONREAD
#define FIONREAD 0x541B
#endif

/* VFIO_DEVICE_BIND_IOMMUFD argument (16 bytes; 24 with token_uuid_ptr) */
struct probe_bind_iommufd {
	uint32_t argsz;
	uint32_t flags;
	int32_t iommufd;
	uint32_t out_devid;
};

#define NR_EXT 13 /* CHECK_EXTENSION / SET_IOMMU arguments 0..12 */


static void report(const char *what, long ret, int err)
{
	if (ret < 0)
		printf("%s = -1 %s\n", what, errname(err));
	else
		printf("%s = %ld\n", what, ret);
}

/* ioctl with a by-value (integer) argument */
static long ioc_val(const char *what, int fd, unsigned long cmd,
		    unsigned long arg)
{
	long r;

	errno = 0;
	r = ioctl(fd, cmd, arg);
	report(what, r, errno);
	return r;
}

/* ioctl with a pointer argument (may be NULL) */
static long ioc_ptr(const char *what, int fd, unsigned long cmd, void *arg)
{
	long r;

	errno = 0;
	r = ioctl(fd, cmd, arg);
	report(what, r, errno);
	return r;
}

static int open_node(const char *what, const char *path)
{
	int fd;

	errno = 0;
	fd = open(path, O_RDWR);
	report(what, fd, errno);
	return fd;
}

static void do_close(const char *what, int fd)
{
	long r;

	errno = 0;
	r = close(fd);
	report(what, r, errno);
}

static void do_read_write(const char *prefix, int fd)
{
	char what[128];
	char buf[8];
	long r;

	memset(buf, 0, sizeof(buf));
	snprintf(what, sizeof(what), "%s: read(8)", prefix);
	errno = 0;
	r = read(fd, buf, sizeof(buf));
	report(what, r, errno);
	snprintf(what, sizeof(what), "%s: write(8)", prefix);
	errno = 0;
	r = write(fd, buf, sizeof(buf));
	report(what, r, errno);
}

/* ---------------------------------------------------------------------- */
/* /dev/iommu, /dev/ioasid                                                 */
/* ---------------------------------------------------------------------- */

/*
 * The VFIO container ioctls iommufd answers itself (vfio_compat.c).  With a
 * fresh context there is no compat IOAS, so whatever needs one is ENODEV,
 * but argument copy-in and validation come first.
 */
static void iommufd_vfio_compat(const char *p, int fd)
{
	char what[160];
	union {
		struct vfio_iommu_type1_info info;
		struct vfio_iommu_type1_dma_map map;
		struct vfio_iommu_type1_dma_unmap unmap;
		unsigned char raw[64];
	} buf;
	int ival = 0;
	int i;

#define W(fmt, ...) snprintf(what, sizeof(what), "%s: " fmt, p, ##__VA_ARGS__)

	W("GET_API_VERSION");
	ioc_val(what, fd, VFIO_GET_API_VERSION, 0);
	W("_IOR(';',100,int)(valid)");
	ioc_ptr(what, fd, _IOR(VFIO_TYPE, VFIO_BASE + 0, int), &ival);

	for (i = 0; i < NR_EXT; i++) {
		W("CHECK_EXTENSION(%d)", i);
		ioc_val(what, fd, VFIO_CHECK_EXTENSION, i);
	}
	W("CHECK_EXTENSION(1000)");
	ioc_val(what, fd, VFIO_CHECK_EXTENSION, 1000);
	W("CHECK_EXTENSION(ULONG_MAX)");
	ioc_val(what, fd, VFIO_CHECK_EXTENSION, ~0UL);

	/* no group attached, hence no compat IOAS */
	for (i = 0; i < NR_EXT; i++) {
		W("SET_IOMMU(%d)", i);
		ioc_val(what, fd, VFIO_SET_IOMMU, i);
	}

	W("IOMMU_GET_INFO(NULL)");
	ioc_ptr(what, fd, VFIO_IOMMU_GET_INFO, NULL);
	memset(&buf, 0, sizeof(buf));
	W("IOMMU_GET_INFO(argsz=0)");
	ioc_ptr(what, fd, VFIO_IOMMU_GET_INFO, &buf);
	memset(&buf, 0, sizeof(buf));
	buf.info.argsz = 16;
	W("IOMMU_GET_INFO(argsz=16)");
	ioc_ptr(what, fd, VFIO_IOMMU_GET_INFO, &buf);

	W("IOMMU_MAP_DMA(NULL)");
	ioc_ptr(what, fd, VFIO_IOMMU_MAP_DMA, NULL);
	memset(&buf, 0, sizeof(buf));
	W("IOMMU_MAP_DMA(argsz=0)");
	ioc_ptr(what, fd, VFIO_IOMMU_MAP_DMA, &buf);
	memset(&buf, 0, sizeof(buf));
	buf.map.argsz = sizeof(buf.map);
	buf.map.flags = VFIO_DMA_MAP_FLAG_VADDR;
	W("IOMMU_MAP_DMA(argsz=32,flags=VADDR)");
	ioc_ptr(what, fd, VFIO_IOMMU_MAP_DMA, &buf);
	memset(&buf, 0, sizeof(buf));
	buf.map.argsz = sizeof(buf.map);
	buf.map.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
	W("IOMMU_MAP_DMA(argsz=32,flags=READ|WRITE)");
	ioc_ptr(what, fd, VFIO_IOMMU_MAP_DMA, &buf);

	W("IOMMU_UNMAP_DMA(NULL)");
	ioc_ptr(what, fd, VFIO_IOMMU_UNMAP_DMA, NULL);
	memset(&buf, 0, sizeof(buf));
	W("IOMMU_UNMAP_DMA(argsz=0)");
	ioc_ptr(what, fd, VFIO_IOMMU_UNMAP_DMA, &buf);
	memset(&buf, 0, sizeof(buf));
	buf.unmap.argsz = sizeof(buf.unmap);
	buf.unmap.flags = VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP;
	W("IOMMU_UNMAP_DMA(argsz=24,flags=GET_DIRTY_BITMAP)");
	ioc_ptr(what, fd, VFIO_IOMMU_UNMAP_DMA, &buf);
	memset(&buf, 0, sizeof(buf));
	buf.unmap.argsz = sizeof(buf.unmap);
	W("IOMMU_UNMAP_DMA(argsz=24,flags=0)");
	ioc_ptr(what, fd, VFIO_IOMMU_UNMAP_DMA, &buf);

	W("IOMMU_DIRTY_PAGES(NULL)");
	ioc_ptr(what, fd, VFIO_IOMMU_DIRTY_PAGES, NULL);
	W("IOMMU_ENABLE");
	ioc_ptr(what, fd, VFIO_IOMMU_ENABLE, NULL);
	W("IOMMU_DISABLE");
	ioc_ptr(what, fd, VFIO_IOMMU_DISABLE, NULL);
#undef W
}

/*
 * Dispatch: nr < 0x80 or past the table goes to the VFIO compat code
 * (ENOTTY for anything it does not know, argument untouched); nr inside the
 * table first reads the u32 size at arg (EFAULT), then compares the whole
 * cmd (ENOTTY), then checks size against the minimum (EINVAL) and a larger
 * size's tail for zeroes (E2BIG).
 */
static void iommufd_dispatch(const char *p, int fd)
{
	char what[160];
	union {
		uint32_t w[8];
		unsigned char raw[256];
	} buf;
	int ival = 0;
	unsigned int nr;

#define W(fmt, ...) snprintf(what, sizeof(what), "%s: " fmt, p, ##__VA_ARGS__)

	/* below 0x80, not a VFIO compat ioctl */
	W("_IO(';',0)(0x3b00,NULL)");
	ioc_ptr(what, fd, _IO(IOMMUFD_TYPE, 0x00), NULL);
	W("GROUP_GET_STATUS(0x3b67,NULL)");
	ioc_ptr(what, fd, VFIO_GROUP_GET_STATUS, NULL);
	W("GROUP_SET_CONTAINER(0x3b68,NULL)");
	ioc_ptr(what, fd, VFIO_GROUP_SET_CONTAINER, NULL);
	W("DEVICE_GET_INFO(0x3b6b,NULL)");
	ioc_ptr(what, fd, VFIO_DEVICE_GET_INFO, NULL);
	W("DEVICE_BIND_IOMMUFD(0x3b76,NULL)");
	ioc_ptr(what, fd, VFIO_DEVICE_BIND_IOMMUFD, NULL);
	W("_IO(';',0x7f)(0x3b7f,NULL)");
	ioc_ptr(what, fd, _IO(IOMMUFD_TYPE, 0x7f), NULL);
	memset(&buf, 0, sizeof(buf));
	W("TCGETS(0x5401,valid)");
	ioc_ptr(what, fd, TCGETS, &buf);
	W("FIONREAD(0x541b,valid)");
	ioc_ptr(what, fd, FIONREAD, &ival);
	W("_IOR('x',1,int)(valid)");
	ioc_ptr(what, fd, _IOR('x', 1, int), &ival);

	/* every slot of the table: the size read faults first */
	for (nr = 0x80; nr <= 0x94; nr++) {
		W("_IO(';',0x%02x)(0x3b%02x,NULL)", nr, nr);
		ioc_ptr(what, fd, _IO(IOMMUFD_TYPE, nr), NULL);
	}
	/* past the table (no CONFIG_IOMMUFD_TEST): VFIO compat, ENOTTY */
	W("_IO(';',0x95)(0x3b95,NULL)");
	ioc_ptr(what, fd, _IO(IOMMUFD_TYPE, 0x95), NULL);
	W("_IO(';',0x9f)(0x3b9f,NULL)");
	ioc_ptr(what, fd, _IO(IOMMUFD_TYPE, 0x9f), NULL);
	W("_IO(';',0xa0)(0x3ba0,NULL)");
	ioc_ptr(what, fd, _IO(IOMMUFD_TYPE, 0xa0), NULL);
	W("_IO(';',0xff)(0x3bff,NULL)");
	ioc_ptr(what, fd, _IO(IOMMUFD_TYPE, 0xff), NULL);

	/* right nr, wrong type byte or direction/size bits */
	W("_IO('x',0x80)(NULL)");
	ioc_ptr(what, fd, _IO('x', 0x80), NULL);
	memset(&buf, 0, sizeof(buf));
	buf.w[0] = 8;
	W("_IO('x',0x80)({8,0})");
	ioc_ptr(what, fd, _IO('x', 0x80), &buf);
	memset(&buf, 0, sizeof(buf));
	buf.w[0] = 8;
	W("_IOWR(';',0x80,8 bytes)({8,0})");
	ioc_ptr(what, fd, _IOWR(IOMMUFD_TYPE, 0x80, uint64_t), &buf);

	/* IOMMU_DESTROY: the size protocol */
	memset(&buf, 0, sizeof(buf));
	W("IOMMU_DESTROY({size=0})");
	ioc_ptr(what, fd, IOMMU_DESTROY, &buf);
	memset(&buf, 0, sizeof(buf));
	buf.w[0] = 4;
	W("IOMMU_DESTROY({size=4})");
	ioc_ptr(what, fd, IOMMU_DESTROY, &buf);
	memset(&buf, 0, sizeof(buf));
	buf.w[0] = 8;
	W("IOMMU_DESTROY({size=8,id=0})");
	ioc_ptr(what, fd, IOMMU_DESTROY, &buf);
	memset(&buf, 0, sizeof(buf));
	buf.w[0] = 8;
	buf.w[1] = 1;
	W("IOMMU_DESTROY({size=8,id=1})");
	ioc_ptr(what, fd, IOMMU_DESTROY, &buf);
	memset(&buf, 0, sizeof(buf));
	buf.w[0] = 16;
	W("IOMMU_DESTROY({size=16,id=0,tail=0})");
	ioc_ptr(what, fd, IOMMU_DESTROY, &buf);
	memset(&buf, 0, sizeof(buf));
	buf.w[0] = 16;
	buf.w[3] = 1;
	W("IOMMU_DESTROY({size=16,id=0,tail!=0})");
	ioc_ptr(what, fd, IOMMU_DESTROY, &buf);
#undef W
}

static void probe_iommufd(const char *path)
{
	char what[160];
	int fd;

	snprintf(what, sizeof(what), "open %s", path);
	fd = open_node(what, path);
	if (fd < 0)
		return;
	iommufd_vfio_compat(path, fd);
	iommufd_dispatch(path, fd);
	do_read_write(path, fd);
	snprintf(what, sizeof(what), "close %s", path);
	do_close(what, fd);
}

/* ---------------------------------------------------------------------- */
/* VFIO device cdev before VFIO_DEVICE_BIND_IOMMUFD                        */
/* ---------------------------------------------------------------------- */

static void bind(const char *p, int fd, const char *label, uint32_t argsz,
		 uint32_t flags, int32_t iommufd)
{
	struct probe_bind_iommufd b;
	char what[160];

	memset(&b, 0, sizeof(b));
	b.argsz = argsz;
	b.flags = flags;
	b.iommufd = iommufd;
	snprintf(what, sizeof(what), "%s: DEVICE_BIND_IOMMUFD(%s)", p, label);
	ioc_ptr(what, fd, VFIO_DEVICE_BIND_IOMMUFD, &b);
}

static void probe_cdev(const char *path)
{
	static const struct {
		const char *name;
		unsigned long cmd;
	} cmds[] = {
		{ "GET_API_VERSION(0x3b64)", VFIO_GET_API_VERSION },
		{ "CHECK_EXTENSION(0x3b65)", VFIO_CHECK_EXTENSION },
		{ "SET_IOMMU(0x3b66)", VFIO_SET_IOMMU },
		{ "GROUP_GET_STATUS(0x3b67)", VFIO_GROUP_GET_STATUS },
		{ "GROUP_SET_CONTAINER(0x3b68)", VFIO_GROUP_SET_CONTAINER },
		{ "GROUP_UNSET_CONTAINER(0x3b69)", VFIO_GROUP_UNSET_CONTAINER },
		{ "GROUP_GET_DEVICE_FD(0x3b6a)", VFIO_GROUP_GET_DEVICE_FD },
		{ "DEVICE_GET_INFO(0x3b6b)", VFIO_DEVICE_GET_INFO },
		{ "DEVICE_GET_REGION_INFO(0x3b6c)", VFIO_DEVICE_GET_REGION_INFO },
		{ "DEVICE_GET_IRQ_INFO(0x3b6d)", VFIO_DEVICE_GET_IRQ_INFO },
		{ "DEVICE_SET_IRQS(0x3b6e)", VFIO_DEVICE_SET_IRQS },
		{ "DEVICE_RESET(0x3b6f)", VFIO_DEVICE_RESET },
		{ "DEVICE_GET_PCI_HOT_RESET_INFO(0x3b70)",
		  VFIO_DEVICE_GET_PCI_HOT_RESET_INFO },
		{ "DEVICE_PCI_HOT_RESET(0x3b71)", VFIO_DEVICE_PCI_HOT_RESET },
		{ "DEVICE_QUERY_GFX_PLANE(0x3b72)", VFIO_DEVICE_QUERY_GFX_PLANE },
		{ "DEVICE_GET_GFX_DMABUF(0x3b73)", VFIO_DEVICE_GET_GFX_DMABUF },
		{ "DEVICE_IOEVENTFD(0x3b74)", VFIO_DEVICE_IOEVENTFD },
		{ "DEVICE_FEATURE(0x3b75)", VFIO_DEVICE_FEATURE },
		{ "DEVICE_ATTACH_IOMMUFD_PT(0x3b77)", VFIO_DEVICE_ATTACH_IOMMUFD_PT },
		{ "DEVICE_DETACH_IOMMUFD_PT(0x3b78)", VFIO_DEVICE_DETACH_IOMMUFD_PT },
		{ "_IO(';',0x79)(0x3b79)", _IO(VFIO_TYPE, 0x79) },
		{ "IOMMU_DESTROY(0x3b80)", IOMMU_DESTROY },
		{ "_IO(';',0)(0x3b00)", _IO(VFIO_TYPE, 0) },
		{ "TCGETS(0x5401)", TCGETS },
		{ "FIONREAD(0x541b)", FIONREAD },
		{ "_IOR('x',1,int)", _IOR('x', 1, int) },
		{ "_IOWR(';',107,info)",
		  _IOWR(VFIO_TYPE, VFIO_BASE + 7, struct vfio_device_info) },
	};
	union {
		struct vfio_device_info di;
		unsigned char raw[256];
	} buf;
	char what[160];
	char rbuf[8];
	void *map;
	size_t i;
	long r;
	int fd, nullfd;

	snprintf(what, sizeof(what), "open %s", path);
	fd = open_node(what, path);
	if (fd < 0)
		return;

	/* BIND_IOMMUFD error paths: none of them binds */
	snprintf(what, sizeof(what), "%s: DEVICE_BIND_IOMMUFD(NULL)", path);
	ioc_ptr(what, fd, VFIO_DEVICE_BIND_IOMMUFD, NULL);
	bind(path, fd, "argsz=0", 0, 0, -1);
	bind(path, fd, "argsz=8", 8, 0, -1);
	bind(path, fd, "argsz=16,iommufd=-1", 16, 0, -1);
	bind(path, fd, "argsz=16,flags=0x80000000,iommufd=0", 16, 0x80000000u,
	     0);
	bind(path, fd, "argsz=16,iommufd=999(closed)", 16, 0, 999);
	nullfd = open("/dev/null", O_RDWR);
	bind(path, fd, "argsz=16,iommufd=/dev/null", 16, 0, nullfd);
	close(nullfd);

	/* every other ioctl: EINVAL before the fd is bound, argument unread */
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		snprintf(what, sizeof(what), "%s: %s(NULL)", path, cmds[i].name);
		ioc_ptr(what, fd, cmds[i].cmd, NULL);
		memset(&buf, 0, sizeof(buf));
		buf.di.argsz = sizeof(buf.di);
		snprintf(what, sizeof(what), "%s: %s(valid)", path, cmds[i].name);
		ioc_ptr(what, fd, cmds[i].cmd, &buf);
	}

	do_read_write(path, fd);
	snprintf(what, sizeof(what), "%s: pread(8,config region)", path);
	errno = 0;
	r = pread(fd, rbuf, sizeof(rbuf), (off_t)VFIO_PCI_CONFIG_REGION_INDEX << 40);
	report(what, r, errno);
	snprintf(what, sizeof(what), "%s: mmap(4096,MAP_SHARED,off=0)", path);
	errno = 0;
	map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		report(what, -1, errno);
	} else {
		report(what, 0, 0);
		munmap(map, 4096);
	}

	snprintf(what, sizeof(what), "close %s", path);
	do_close(what, fd);
}

int main(int argc, char **argv)
{
	const char *cdev = "/dev/vfio/devices/vfio0";

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc > 1)
		cdev = argv[1];

	probe_iommufd("/dev/iommu");
	probe_iommufd("/dev/ioasid");
	probe_cdev(cdev);
	return 0;
}
