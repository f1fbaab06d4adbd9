/*
 * container_basics.c - fidelity probe for the legacy VFIO container
 * (/dev/vfio/vfio) and group (/dev/vfio/<N>) nodes.
 *
 * Prints one line per observation:
 *     <what> = <ret>            (success; the ioctl/syscall return value)
 *     <what> = -1 <ERRNONAME>   (failure)
 * plus a few "<what>.<field> = <value>" lines for written-back fields.
 * Nothing printed depends on addresses, pids or timing.  fd numbers are
 * printed because they are meaningful: the program must start with only
 * 0, 1 and 2 open, so the first open returns 3.
 *
 * Usage: container_basics [GROUP [BDF]]   (defaults: 1, 0000:00:01.0)
 *
 * Only the 6.1 <linux/vfio.h> is assumed; newer constants are defined here.
 * Build: gcc -O2 -Wall -o container_basics container_basics.c
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
#ifndef VFIO_DEVICE_BIND_IOMMUFD
#define VFIO_DEVICE_BIND_IOMMUFD _IO(VFIO_TYPE, VFIO_BASE + 18)
#endif
#ifndef VFIO_EEH_PE_OP
#define VFIO_EEH_PE_OP _IO(VFIO_TYPE, VFIO_BASE + 21)
#endif
#ifndef IOMMU_DESTROY
#define IOMMU_DESTROY _IO(';', 0x80)
#endif
#ifndef IOMMU_IOAS_ALLOW_IOVAS
#define IOMMU_IOAS_ALLOW_IOVAS _IO(';', 0x82) /* == _IO(';', 130) */
#endif
#ifndef TCGETS
#define TCGETS 0x5401
#endif
#ifndef FIONREAD
#define FIONREAD 0x541B
#endif

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

static void check_extensions(const char *prefix, int fd)
{
	char what[128];
	int i;

	for (i = 0; i < NR_EXT; i++) {
		snprintf(what, sizeof(what), "%s: CHECK_EXTENSION(%d)", prefix, i);
		ioc_val(what, fd, VFIO_CHECK_EXTENSION, i);
	}
	snprintf(what, sizeof(what), "%s: CHECK_EXTENSION(1000)", prefix);
	ioc_val(what, fd, VFIO_CHECK_EXTENSION, 1000);
	snprintf(what, sizeof(what), "%s: CHECK_EXTENSION(ULONG_MAX)", prefix);
	ioc_val(what, fd, VFIO_CHECK_EXTENSION, ~0UL);
}

static void group_status(const char *prefix, int gfd, uint32_t argsz)
{
	struct vfio_group_status st;
	char what[128];

	memset(&st, 0xa5, sizeof(st));
	st.argsz = argsz;
	snprintf(what, sizeof(what), "%s: GROUP_GET_STATUS(argsz=%u)", prefix,
		 argsz);
	if (ioc_ptr(what, gfd, VFIO_GROUP_GET_STATUS, &st) == 0) {
		printf("%s: GROUP_GET_STATUS.argsz = %u\n", prefix, st.argsz);
		printf("%s: GROUP_GET_STATUS.flags = 0x%x\n", prefix, st.flags);
	}
}

/*
 * Numbers that the container does not implement itself.  Before SET_IOMMU
 * the container answers every one of them EINVAL without looking at the
 * argument; after SET_IOMMU they reach type1, which rejects unknown numbers
 * with ENOTTY.  Pointers are valid so that dereferencing cannot fail.
 */
static void container_foreign(const char *prefix, int cfd, const char *bdf)
{
	char what[160];
	union {
		struct vfio_group_status gs;
		struct vfio_device_info di;
		unsigned char raw[256];
	} buf;
	int ival = 0;
	uint32_t destroy[2] = { 8, 0 };

#define FOREIGN(name, cmd, arg)                                               \
	do {                                                                  \
		memset(&buf, 0, sizeof(buf));                                 \
		ival = 0;                                                     \
		snprintf(what, sizeof(what), "%s: %s", prefix, name);         \
		ioc_ptr(what, cfd, (cmd), (arg));                             \
	} while (0)

	buf.gs.argsz = sizeof(buf.gs);
	FOREIGN("GROUP_GET_STATUS(0x3b67,valid)", VFIO_GROUP_GET_STATUS, &buf);
	FOREIGN("GROUP_UNSET_CONTAINER(0x3b69)", VFIO_GROUP_UNSET_CONTAINER, NULL);
	FOREIGN("GROUP_GET_DEVICE_FD(0x3b6a,bdf)", VFIO_GROUP_GET_DEVICE_FD,
		(void *)bdf);
	memset(&buf, 0, sizeof(buf));
	buf.di.argsz = sizeof(buf.di);
	snprintf(what, sizeof(what), "%s: DEVICE_GET_INFO(0x3b6b,valid)", prefix);
	ioc_ptr(what, cfd, VFIO_DEVICE_GET_INFO, &buf);
	FOREIGN("DEVICE_RESET(0x3b6f)", VFIO_DEVICE_RESET, NULL);
	FOREIGN("IOMMU_ENABLE(0x3b73)", VFIO_IOMMU_ENABLE, NULL);
	FOREIGN("IOMMU_DISABLE(0x3b74)", VFIO_IOMMU_DISABLE, NULL);
	FOREIGN("DEVICE_BIND_IOMMUFD(0x3b76,zeroed)", VFIO_DEVICE_BIND_IOMMUFD, &buf);
	FOREIGN("EEH_PE_OP(0x3b79,zeroed)", VFIO_EEH_PE_OP, &buf);
	FOREIGN("_IO(';',99)(0x3b63)", _IO(VFIO_TYPE, 99), NULL);
	FOREIGN("_IO(';',0)(0x3b00)", _IO(VFIO_TYPE, 0), NULL);
	snprintf(what, sizeof(what), "%s: IOMMU_DESTROY(0x3b80,{8,0})", prefix);
	ioc_ptr(what, cfd, IOMMU_DESTROY, destroy);
	FOREIGN("_IO(';',130)(0x3b82,zeroed)", IOMMU_IOAS_ALLOW_IOVAS, &buf);
	FOREIGN("TCGETS(0x5401,valid)", TCGETS, &buf);
	FOREIGN("FIONREAD(0x541b,valid)", FIONREAD, &ival);
	FOREIGN("_IOR('x',1,int)(valid)", _IOR('x', 1, int), &ival);
	FOREIGN("_IOR(';',100,int)(valid)", _IOR(VFIO_TYPE, VFIO_BASE + 0, int),
		&ival);
	FOREIGN("_IOWR(';',112,info)(valid)",
		_IOWR(VFIO_TYPE, VFIO_BASE + 12, struct vfio_iommu_type1_info),
		&buf);
#undef FOREIGN
}

/* The type1 ioctls with NULL and with a zeroed (argsz = 0) argument. */
static void container_type1(const char *prefix, int cfd)
{
	char what[160];
	unsigned char buf[64];

#define T1(name, cmd)                                                         \
	do {                                                                  \
		snprintf(what, sizeof(what), "%s: %s(NULL)", prefix, name);   \
		ioc_ptr(what, cfd, (cmd), NULL);                              \
		memset(buf, 0, sizeof(buf));                                  \
		snprintf(what, sizeof(what), "%s: %s(argsz=0)", prefix, name); \
		ioc_ptr(what, cfd, (cmd), buf);                               \
	} while (0)

	T1("IOMMU_GET_INFO", VFIO_IOMMU_GET_INFO);
	T1("IOMMU_MAP_DMA", VFIO_IOMMU_MAP_DMA);
	T1("IOMMU_UNMAP_DMA", VFIO_IOMMU_UNMAP_DMA);
	T1("IOMMU_DIRTY_PAGES", VFIO_IOMMU_DIRTY_PAGES);
#undef T1
}

/*
 * Numbers the group does not implement: everything but GET_STATUS,
 * SET_CONTAINER, UNSET_CONTAINER and GET_DEVICE_FD is ENOTTY.
 */
static void group_foreign(const char *prefix, int gfd)
{
	char what[160];
	union {
		struct vfio_group_status gs;
		struct vfio_device_info di;
		struct vfio_iommu_type1_info ii;
		unsigned char raw[256];
	} buf;
	int ival = 0;
	uint32_t destroy[2] = { 8, 0 };

#define GF(name, cmd, arg)                                                    \
	do {                                                                  \
		snprintf(what, sizeof(what), "%s: %s", prefix, name);         \
		ioc_ptr(what, gfd, (cmd), (arg));                             \
	} while (0)
#define GV(name, cmd, val)                                                    \
	do {                                                                  \
		snprintf(what, sizeof(what), "%s: %s", prefix, name);         \
		ioc_val(what, gfd, (cmd), (val));                             \
	} while (0)

	GV("GET_API_VERSION(0x3b64)", VFIO_GET_API_VERSION, 0);
	GV("CHECK_EXTENSION(0x3b65,1)", VFIO_CHECK_EXTENSION, 1);
	GV("SET_IOMMU(0x3b66,3)", VFIO_SET_IOMMU, 3);
	memset(&buf, 0, sizeof(buf));
	buf.di.argsz = sizeof(buf.di);
	GF("DEVICE_GET_INFO(0x3b6b,valid)", VFIO_DEVICE_GET_INFO, &buf);
	GF("DEVICE_RESET(0x3b6f)", VFIO_DEVICE_RESET, NULL);
	memset(&buf, 0, sizeof(buf));
	buf.ii.argsz = sizeof(buf.ii);
	GF("IOMMU_GET_INFO(0x3b70,valid)", VFIO_IOMMU_GET_INFO, &buf);
	GF("IOMMU_MAP_DMA(0x3b71,NULL)", VFIO_IOMMU_MAP_DMA, NULL);
	GF("IOMMU_DIRTY_PAGES(0x3b75,NULL)", VFIO_IOMMU_DIRTY_PAGES, NULL);
	GF("IOMMU_DESTROY(0x3b80,{8,0})", IOMMU_DESTROY, destroy);
	memset(&buf, 0, sizeof(buf));
	GF("_IO(';',130)(0x3b82,zeroed)", IOMMU_IOAS_ALLOW_IOVAS, &buf);
	GF("TCGETS(0x5401,valid)", TCGETS, &buf);
	GF("FIONREAD(0x541b,valid)", FIONREAD, &ival);
	GF("_IOR('x',1,int)(valid)", _IOR('x', 1, int), &ival);
	memset(&buf, 0, sizeof(buf));
	buf.gs.argsz = sizeof(buf.gs);
	GF("_IOWR(';',103,status)(valid)",
	   _IOWR(VFIO_TYPE, VFIO_BASE + 3, struct vfio_group_status), &buf);
#undef GF
#undef GV
}

static void set_iommu(const char *prefix, int cfd, unsigned long type)
{
	char what[128];

	snprintf(what, sizeof(what), "%s: SET_IOMMU(%lu)", prefix, type);
	ioc_val(what, cfd, VFIO_SET_IOMMU, type);
}

static void set_container(const char *prefix, const char *label, int gfd,
			  int *fdp)
{
	char what[160];

	snprintf(what, sizeof(what), "%s: GROUP_SET_CONTAINER(%s)", prefix, label);
	ioc_ptr(what, gfd, VFIO_GROUP_SET_CONTAINER, fdp);
}

int main(int argc, char **argv)
{
	static const unsigned long bad_types[] = {
		0, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 1000
	};
	const char *bdf = "0000:00:01.0";
	char gpath[64];
	int group = 1;
	int cfd, cfd2, gfd, gfd2, nullfd, minus1 = -1;
	size_t i;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc > 1)
		group = atoi(argv[1]);
	if (argc > 2)
		bdf = argv[2];
	snprintf(gpath, sizeof(gpath), "/dev/vfio/%d", group);

	/* ---- fresh container, no group ---- */
	cfd = open_node("open /dev/vfio/vfio", "/dev/vfio/vfio");
	if (cfd < 0)
		return 1;
	ioc_val("container: GET_API_VERSION", cfd, VFIO_GET_API_VERSION, 0);
	check_extensions("container(empty)", cfd);
	do_read_write("container(empty)", cfd);
	container_type1("container(empty)", cfd);
	container_foreign("container(empty)", cfd, bdf);
	set_iommu("container(empty)", cfd, VFIO_TYPE1v2_IOMMU);
	set_iommu("container(empty)", cfd, VFIO_TYPE1_IOMMU);
	set_iommu("container(empty)", cfd, 0);

	/* a second, independent container */
	cfd2 = open_node("open /dev/vfio/vfio (second container)",
			 "/dev/vfio/vfio");
	if (cfd2 >= 0) {
		ioc_val("container2: GET_API_VERSION", cfd2,
			VFIO_GET_API_VERSION, 0);
		ioc_val("container2: CHECK_EXTENSION(3)", cfd2,
			VFIO_CHECK_EXTENSION, 3);
		do_close("close container2", cfd2);
	}

	/* ---- group, not attached ---- */
	gfd = open_node("open group", gpath);
	if (gfd < 0)
		return 1;
	gfd2 = open_node("open group (second open)", gpath);
	if (gfd2 >= 0)
		do_close("close group (second open)", gfd2);
	group_status("group(detached)", gfd, sizeof(struct vfio_group_status));
	group_status("group(detached)", gfd, 16);
	group_status("group(detached)", gfd, 0);
	group_status("group(detached)", gfd, 4);
	ioc_ptr("group(detached): GROUP_GET_STATUS(NULL)", gfd,
		VFIO_GROUP_GET_STATUS, NULL);
	do_read_write("group(detached)", gfd);
	group_foreign("group(detached)", gfd);
	ioc_ptr("group(detached): GROUP_UNSET_CONTAINER", gfd,
		VFIO_GROUP_UNSET_CONTAINER, NULL);
	ioc_ptr("group(detached): GROUP_GET_DEVICE_FD(NULL)", gfd,
		VFIO_GROUP_GET_DEVICE_FD, NULL);
	ioc_ptr("group(detached): GROUP_GET_DEVICE_FD(\"nonexistent\")", gfd,
		VFIO_GROUP_GET_DEVICE_FD, (void *)"nonexistent");
	ioc_ptr("group(detached): GROUP_GET_DEVICE_FD(bdf)", gfd,
		VFIO_GROUP_GET_DEVICE_FD, (void *)bdf);

	/* ---- SET_CONTAINER error paths, then attach ---- */
	nullfd = open("/dev/null", O_RDWR);
	set_container("group(detached)", "NULL", gfd, NULL);
	set_container("group(detached)", "fd -1", gfd, &minus1);
	set_container("group(detached)", "/dev/null fd", gfd, &nullfd);
	set_container("group(detached)", "group fd", gfd, &gfd);
	set_container("group(detached)", "container fd", gfd, &cfd);
	group_status("group(attached)", gfd, sizeof(struct vfio_group_status));
	set_container("group(attached)", "container fd", gfd, &cfd);
	set_container("group(attached)", "fd -1", gfd, &minus1);
	set_container("group(attached)", "/dev/null fd", gfd, &nullfd);
	set_container("group(attached)", "NULL", gfd, NULL);
	close(nullfd);

	/* ---- container with a group but no IOMMU driver ---- */
	check_extensions("container(group,no iommu)", cfd);
	ioc_ptr("container(group,no iommu): IOMMU_GET_INFO(NULL)", cfd,
		VFIO_IOMMU_GET_INFO, NULL);
	ioc_ptr("container(group,no iommu): IOMMU_MAP_DMA(NULL)", cfd,
		VFIO_IOMMU_MAP_DMA, NULL);
	ioc_val("container(group,no iommu): TCGETS(0x5401,0)", cfd, TCGETS, 0);
	ioc_ptr("group(attached,no iommu): GROUP_GET_DEVICE_FD(bdf)", gfd,
		VFIO_GROUP_GET_DEVICE_FD, (void *)bdf);
	for (i = 0; i < sizeof(bad_types) / sizeof(bad_types[0]); i++)
		set_iommu("container(group,no iommu)", cfd, bad_types[i]);
	set_iommu("container(group,no iommu)", cfd, VFIO_TYPE1v2_IOMMU);

	/* ---- TYPE1v2 set ---- */
	set_iommu("container(type1v2)", cfd, VFIO_TYPE1v2_IOMMU);
	set_iommu("container(type1v2)", cfd, VFIO_TYPE1_IOMMU);
	set_iommu("container(type1v2)", cfd, 0);
	check_extensions("container(type1v2)", cfd);
	ioc_val("container(type1v2): GET_API_VERSION", cfd,
		VFIO_GET_API_VERSION, 0);
	do_read_write("container(type1v2)", cfd);
	container_type1("container(type1v2)", cfd);
	container_foreign("container(type1v2)", cfd, bdf);
	group_status("group(type1v2)", gfd, sizeof(struct vfio_group_status));
	group_foreign("group(type1v2)", gfd);

	/* ---- last group leaves: the container forgets its IOMMU driver ---- */
	ioc_ptr("group(type1v2): GROUP_UNSET_CONTAINER", gfd,
		VFIO_GROUP_UNSET_CONTAINER, NULL);
	group_status("group(unset)", gfd, sizeof(struct vfio_group_status));
	ioc_ptr("group(unset): GROUP_UNSET_CONTAINER", gfd,
		VFIO_GROUP_UNSET_CONTAINER, NULL);
	check_extensions("container(after unset)", cfd);
	ioc_ptr("container(after unset): IOMMU_GET_INFO(NULL)", cfd,
		VFIO_IOMMU_GET_INFO, NULL);
	ioc_ptr("container(after unset): IOMMU_DIRTY_PAGES(NULL)", cfd,
		VFIO_IOMMU_DIRTY_PAGES, NULL);
	set_iommu("container(after unset)", cfd, VFIO_TYPE1v2_IOMMU);

	/* ---- again with TYPE1 (v1); then the group is closed instead ---- */
	set_container("group(unset)", "container fd", gfd, &cfd);
	set_iommu("container(group,no iommu)", cfd, VFIO_TYPE1_IOMMU);
	ioc_val("container(type1): CHECK_EXTENSION(1)", cfd,
		VFIO_CHECK_EXTENSION, 1);
	ioc_val("container(type1): CHECK_EXTENSION(3)", cfd,
		VFIO_CHECK_EXTENSION, 3);
	ioc_ptr("container(type1): IOMMU_DIRTY_PAGES(NULL)", cfd,
		VFIO_IOMMU_DIRTY_PAGES, NULL);
	ioc_ptr("container(type1): IOMMU_GET_INFO(NULL)", cfd,
		VFIO_IOMMU_GET_INFO, NULL);
	do_close("close group", gfd);
	/* group release detached it: no driver any more */
	ioc_ptr("container(group closed): IOMMU_GET_INFO(NULL)", cfd,
		VFIO_IOMMU_GET_INFO, NULL);
	ioc_val("container(group closed): CHECK_EXTENSION(10)", cfd,
		VFIO_CHECK_EXTENSION, 10);
	set_iommu("container(group closed)", cfd, VFIO_TYPE1v2_IOMMU);

	/* ---- close-then-reopen: the group is free again at once ---- */
	gfd = open_node("open group (reopen after close)", gpath);
	if (gfd >= 0) {
		group_status("group(reopened)", gfd,
			     sizeof(struct vfio_group_status));
		gfd2 = open_node("open group (second open after reopen)", gpath);
		if (gfd2 >= 0)
			do_close("close group (second open after reopen)", gfd2);
		do_close("close group (reopened)", gfd);
	}
	do_close("close container", cfd);
	return 0;
}
