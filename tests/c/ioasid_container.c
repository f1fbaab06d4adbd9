/*
 * ioasid_container.c - fidelity probe for a legacy VFIO group attached to
 * an iommufd (/dev/iommu) with VFIO_GROUP_SET_CONTAINER, and for the VFIO
 * container ioctls that iommufd answers on its own fd through the
 * compatibility IOAS (drivers/iommu/iommufd/vfio_compat.c).
 *
 * Phases: the iommufd before the group is attached (no compat IOAS); the
 * group attached but no device open (a compat IOAS without any IOMMU
 * domain); the device opened with GROUP_GET_DEVICE_FD (it is bound and
 * attached to the compat IOAS, which gets the IOMMU's domain, aperture and
 * reserved regions); MAP/UNMAP through the compat IOAS and their error
 * cases; SET_IOMMU(TYPE1) (large pages off, unmaps may split); the device
 * closed; the group detached.
 *
 * Prints one line per observation:
 *     <what> = <ret>            (success; the ioctl/syscall return value)
 *     <what> = -1 <ERRNONAME>   (failure)
 * plus "<what>.<field> = <value>" lines for written-back fields.  Nothing
 * printed depends on addresses, pids or timing: user addresses are named by
 * the buffer they belong to.  The program must start with only fds 0, 1
 * and 2 open.  Without iommufd (e.g. Debian's 6.1) the first open fails and
 * the program stops there.
 *
 * A label printed before gets " #n" (its n-th use), so every line is unique;
 * the same lines are printed whatever the answers, so outputs can be compared
 * line by line.
 *
 * /dev/iommu is the upstream name; this project also serves it as
 * /dev/ioasid.  Only the 6.1 <linux/vfio.h> is assumed.
 * Build: gcc -O2 -Wall -Werror -o ioasid_container ioasid_container.c
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdarg.h>
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

#define IOMMUFD "/dev/iommu"
#define GROUP "/dev/vfio/1"
#define BDF "0000:00:01.0"
#define PG 0x1000UL

#include "type1_probe.h"

static void check_exts(const char *p, int fd)
{
	check_ext(p, fd, VFIO_TYPE1_IOMMU, "TYPE1");
	check_ext(p, fd, VFIO_TYPE1v2_IOMMU, "TYPE1v2");
	check_ext(p, fd, VFIO_DMA_CC_IOMMU, "DMA_CC_IOMMU");
	check_ext(p, fd, 6, "NESTING(6)");
	check_ext(p, fd, VFIO_NOIOMMU_IOMMU, "NOIOMMU");
	check_ext(p, fd, VFIO_UNMAP_ALL, "UNMAP_ALL");
	check_ext(p, fd, VFIO_UPDATE_VADDR, "UPDATE_VADDR");
}

/* GET_INFO at 16, 24, the grown size - 1, the grown size and 4096. */
static void info_series(const char *p, int fd)
{
	uint32_t grown;

	get_info(p, fd, 16, 0);
	grown = get_info(p, fd, 24, 0);
	if (grown <= 24 || grown > INFO_BUF)
		grown = 26;	/* keep the same lines when GET_INFO fails */
	get_info(p, fd, grown - 1, 0);
	get_info(p, fd, grown, 1);
	address_width(p);
	get_info(p, fd, INFO_BUF, 1);
}

int main(void)
{
	unsigned char *buf, *big, *hole, *none, *ro, *half;
	int ifd, gfd, dfd, gfd2;
	const char *p;

	setvbuf(stdout, NULL, _IOLBF, 0);

	buf = alloc_pages(4, PROT_READ | PROT_WRITE);
	ro = alloc_pages(2, PROT_READ);
	none = alloc_pages(2, PROT_NONE);
	half = alloc_pages(2, PROT_READ | PROT_WRITE);
	if (mprotect(half + PG, PG, PROT_NONE)) {
		perror("mprotect");
		return 2;
	}
	big = mmap(NULL, 0x200000, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (big == MAP_FAILED) {
		perror("mmap");
		return 2;
	}
	hole = alloc_pages(2, PROT_READ | PROT_WRITE);
	munmap(hole, 2 * PG);

	ifd = open_report("open " IOMMUFD, IOMMUFD, O_RDWR);
	if (ifd < 0)
		return 0;
	gfd = open_report("open " GROUP, GROUP, O_RDWR);
	if (gfd < 0)
		return 1;

	/* ---- no group attached: no compat IOAS ---- */
	p = "detached";
	ioc_val("detached: GET_API_VERSION", ifd, VFIO_GET_API_VERSION, 0);
	check_exts(p, ifd);
	set_iommu(p, ifd, VFIO_TYPE1v2_IOMMU);
	set_iommu(p, ifd, 2);
	get_info(p, ifd, 16, 0);
	map_dma(p, ifd, F_RW, buf, "buf", 0x100000, PG);
	unmap_dma(p, ifd, 0, 0x100000, PG);
	group_status(p, gfd);

	/* ---- attach the group to the iommufd ---- */
	p = "attach";
	set_container(p, gfd, ifd);
	group_status(p, gfd);
	set_container(p, gfd, ifd);
	gfd2 = open_report("attach: open " GROUP " (second open)", GROUP, O_RDWR);
	if (gfd2 >= 0)
		close_report("attach: close second open", gfd2);

	/* ---- a compat IOAS, but no device open: no IOMMU domain ---- */
	p = "nodev";
	check_exts(p, ifd);
	set_iommu(p, ifd, 0);
	set_iommu(p, ifd, 2);
	set_iommu(p, ifd, 6);
	set_iommu(p, ifd, 9);
	set_iommu(p, ifd, VFIO_TYPE1v2_IOMMU);
	set_iommu(p, ifd, VFIO_TYPE1v2_IOMMU);
	info_series(p, ifd);
	/* nothing is pinned without a domain, and the alignment is 1 */
	map_dma(p, ifd, F_RW, hole, "hole", 0x100000, PG);
	map_dma(p, ifd, 0, buf, "buf", 0x200000, PG);
	map_dma(p, ifd, F_RW, buf + 0x800, "buf+0x800", 0x300800, 0x800);
	unmap_dma(p, ifd, U_ALL, 0, 0);

	/* ---- open the device: bound and attached to the compat IOAS ---- */
	p = "dev";
	dfd = ioc("dev: GROUP_GET_DEVICE_FD(" BDF ")", gfd,
		      VFIO_GROUP_GET_DEVICE_FD, (void *)BDF);
	check_exts(p, ifd);
	set_iommu(p, ifd, VFIO_TYPE1v2_IOMMU);
	info_series(p, ifd);

	/* ---- the v2 unmap rules: A=[0x1000,0x3000), B=[0x3000,0x5000) ---- */
	p = "unmap";
	map_dma(p, ifd, F_RW, buf, "buf", 0x1000, 2 * PG);
	map_dma(p, ifd, F_RW, buf + 0x2000, "buf+0x2000", 0x3000, 2 * PG);
	unmap_dma(p, ifd, 0, 0x1000, PG);
	unmap_dma(p, ifd, 0, 0x2000, 0x3000);
	unmap_dma(p, ifd, 0, 0x1000, 0x3000);
	unmap_dma(p, ifd, 0, 0x3000, 0x2000);
	unmap_dma(p, ifd, 0, 0x10000, PG);
	unmap_dma(p, ifd, 0, 0x0, 0x10000);
	unmap_dma(p, ifd, 0, 0x100800, PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0x1000, 2 * PG);
	map_dma(p, ifd, F_RW, buf + 0x2000, "buf+0x2000", 0x3000, 2 * PG);
	unmap_dma(p, ifd, 0, 0x0, 0x10000);
	map_dma(p, ifd, F_RW, buf, "buf", 0x1000, 2 * PG);
	unmap_dma(p, ifd, U_ALL, 0, 0x1000);
	unmap_dma(p, ifd, U_VADDR, 0x1000, 2 * PG);
	unmap_dma(p, ifd, U_DIRTY, 0x1000, 2 * PG);
	unmap_dma(p, ifd, 0, 0x1000, 0);
	unmap_dma(p, ifd, 0, 0xfffffffffffff000ULL, 2 * PG);
	unmap_dma(p, ifd, U_ALL, 0, 0);
	unmap_dma(p, ifd, U_ALL, 0, 0);

	/* ---- MAP_DMA errors ---- */
	p = "map";
	map_dma(p, ifd, F_VADDR, buf, "buf", 0x100000, PG);
	map_dma(p, ifd, F_RW | 0x8, buf, "buf", 0x100000, PG);
	map_raw(p, ifd, 31, F_RW, buf, "buf", 0x100000, PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0x100000, 4 * PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0x100000, 4 * PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0x101000, 2 * PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0xff000, 2 * PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0x110800, PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0x110000, 0x1800);
	map_dma(p, ifd, F_RW, buf + 0x800, "buf+0x800", 0x110000, PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0x110000, 0);
	/* the MSI window, the aperture, wrap-around */
	map_dma(p, ifd, F_RW, buf, "buf", 0xfee00000, PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0xfedff000, 2 * PG);
	map_dma(p, ifd, F_RW, big, "big", 0xfedff000, 0x102000);
	map_dma(p, ifd, F_RW, buf, "buf", 0xfedff000, PG);
	map_dma(p, ifd, F_RW, big, "big", 0xfedfe000, 0x102000);
	unmap_dma(p, ifd, 0, 0xfedff000, PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0x8000000000ULL, PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0x7ffffff000ULL, 2 * PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0x7ffffff000ULL, PG);
	unmap_dma(p, ifd, 0, 0x7ffffff000ULL, PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0xfffffffffffff000ULL, 2 * PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0xfffffffffffff000ULL, PG);
	map_dma(p, ifd, F_RW, (void *)(uintptr_t)0xfffffffffffff000ULL,
		"0xfffffffffffff000", 0x110000, 2 * PG);
	map_dma(p, ifd, F_RW, (void *)(uintptr_t)0xfffffffffffff000ULL,
		"0xfffffffffffff000", 0x110000, PG);
	/* user memory */
	map_dma(p, ifd, F_RW, hole, "hole", 0x120000, PG);
	map_dma(p, ifd, F_RW, half, "rw_then_prot_none", 0x120000, 2 * PG);
	map_dma(p, ifd, F_RW, none, "prot_none", 0x120000, PG);
	map_dma(p, ifd, F_READ, none, "prot_none", 0x120000, PG);
	map_dma(p, ifd, F_RW, ro, "read_only", 0x120000, 2 * PG);
	map_dma(p, ifd, F_WRITE, ro, "read_only", 0x120000, 2 * PG);
	map_dma(p, ifd, F_READ, ro, "read_only", 0x120000, 2 * PG);
	map_dma(p, ifd, F_RW, (void *)(uintptr_t)PG, "0x1000", 0x130000, PG);
	/* no READ/WRITE: iommufd accepts it, the VT-d page table does not */
	map_dma(p, ifd, 0, buf, "buf", 0x140000, PG);
	unmap_dma(p, ifd, 0, 0x120000, 0x30000);
	unmap_dma(p, ifd, U_ALL, 0, 0);

	/* ---- SET_IOMMU(TYPE1): large pages off, unmaps split areas ---- */
	p = "type1";
	map_dma(p, ifd, F_RW, buf, "buf", 0x1000, 2 * PG);
	set_iommu(p, ifd, VFIO_TYPE1_IOMMU);
	unmap_dma(p, ifd, U_ALL, 0, 0);
	set_iommu(p, ifd, VFIO_TYPE1_IOMMU);
	set_iommu(p, ifd, VFIO_TYPE1_IOMMU);
	map_dma(p, ifd, F_RW, buf, "buf", 0x1000, 2 * PG);
	unmap_dma(p, ifd, 0, 0x1000, PG);
	unmap_dma(p, ifd, 0, 0x1000, 2 * PG);
	map_dma(p, ifd, F_RW, buf, "buf", 0x1000, 4 * PG);
	unmap_dma(p, ifd, 0, 0x2000, PG);
	unmap_dma(p, ifd, U_ALL, 0, 0);

	/* ---- close the device: the mappings stay in the IOAS ---- */
	p = "closed";
	map_dma(p, ifd, F_RW, buf, "buf", 0x100000, 2 * PG);
	close_report("closed: close device", dfd);
	check_ext(p, ifd, VFIO_DMA_CC_IOMMU, "DMA_CC_IOMMU");
	get_info(p, ifd, INFO_BUF, 1);
	map_dma(p, ifd, F_RW, hole, "hole", 0x200000, PG);

	/* ---- detach the group: the compat IOAS is still there ---- */
	p = "unset";
	ioc("unset: GROUP_UNSET_CONTAINER", gfd, VFIO_GROUP_UNSET_CONTAINER,
		NULL);
	group_status(p, gfd);
	ioc("unset: GROUP_UNSET_CONTAINER", gfd, VFIO_GROUP_UNSET_CONTAINER,
		NULL);
	check_ext(p, ifd, VFIO_DMA_CC_IOMMU, "DMA_CC_IOMMU");
	set_iommu(p, ifd, VFIO_TYPE1v2_IOMMU);
	unmap_dma(p, ifd, U_ALL, 0, 0);
	close_report("close group", gfd);
	close_report("close " IOMMUFD, ifd);
	return 0;
}
