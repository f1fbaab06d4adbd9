/*
 * type1_limits.c - fidelity probe for the VFIO type1 limits: the number of
 * live mappings per container (dma_entry_limit, 65535 by default: ENOSPC)
 * and the locked-memory accounting against RLIMIT_MEMLOCK (ENOMEM).
 *
 * Part 1 (dma_entry_limit) runs with the caller's full capabilities: one
 * page of memory is mapped at 65535 different IOVAs, then the 65536th
 * MAP_DMA fails.  Part 2 (RLIMIT_MEMLOCK) drops CAP_IPC_LOCK with the raw
 * capset syscall (it cannot be regained, hence the order), lowers
 * RLIMIT_MEMLOCK to 64 KiB and maps within and beyond it, printing VmLck
 * from /proc/self/status at each step.
 *
 * Prints one line per observation:
 *     <what> = <ret>            (success; the ioctl/syscall return value)
 *     <what> = -1 <ERRNONAME>   (failure)
 * plus "<what>.<field> = <value>" lines for written-back fields.  Nothing
 * printed depends on addresses, pids or timing.  Must run as root (or with
 * CAP_IPC_LOCK) and start with only fds 0, 1 and 2 open.
 *
 * A label printed before gets " #n" (its n-th use), so every line is unique;
 * the same lines are printed whatever the answers, so outputs can be compared
 * line by line.
 *
 * Only the 6.1 <linux/vfio.h> is assumed.
 * Build: gcc -O2 -Wall -Werror -o type1_limits type1_limits.c
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
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/capability.h>
#include <linux/vfio.h>
#include "probe.h"

#define CONTAINER "/dev/vfio/vfio"
#define GROUP "/dev/vfio/1"
#define PG 0x1000UL
#define NR_LIMIT 65535

#include "type1_probe.h"

/* MAP_DMA without printing: returns 0 or the errno. */
static int map_quiet(int cfd, const void *vaddr, uint64_t iova, uint64_t size)
{
	struct vfio_iommu_type1_dma_map m;

	memset(&m, 0, sizeof(m));
	m.argsz = sizeof(m);
	m.flags = F_RW;
	m.vaddr = (uintptr_t)vaddr;
	m.iova = iova;
	m.size = size;
	return ioctl(cfd, VFIO_IOMMU_MAP_DMA, &m) ? errno : 0;
}

/* VmLck from /proc/self/status, as the kernel prints it. */
static void vmlck(const char *p)
{
	char line[256], label[160], text[256] = "(missing)";
	FILE *f = fopen("/proc/self/status", "r");

	if (!f) {
		snprintf(text, sizeof(text), "? (%s)", errname(errno));
	} else {
		while (fgets(line, sizeof(line), f)) {
			if (!strncmp(line, "VmLck:", 6)) {
				char *v = line + 6;

				while (*v == ' ' || *v == '\t')
					v++;
				v[strcspn(v, "\n")] = 0;
				snprintf(text, sizeof(text), "%s", v);
				break;
			}
		}
		fclose(f);
	}
	snprintf(label, sizeof(label), "%s: VmLck", p);
	note(label, "%s", text);
}

/* Clear one capability from the effective and permitted sets. */
static long drop_cap(const char *what, int cap)
{
	struct __user_cap_header_struct hdr;
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
	long r;

	memset(&hdr, 0, sizeof(hdr));
	memset(data, 0, sizeof(data));
	hdr.version = _LINUX_CAPABILITY_VERSION_3;
	hdr.pid = 0;
	if (syscall(SYS_capget, &hdr, data)) {
		perror("capget");
		exit(2);
	}
	data[cap / 32].effective &= ~(1u << (cap % 32));
	data[cap / 32].permitted &= ~(1u << (cap % 32));
	errno = 0;
	r = syscall(SYS_capset, &hdr, data);
	return report(what, r, errno);
}

static int has_cap(int cap)
{
	struct __user_cap_header_struct hdr;
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];

	memset(&hdr, 0, sizeof(hdr));
	memset(data, 0, sizeof(data));
	hdr.version = _LINUX_CAPABILITY_VERSION_3;
	if (syscall(SYS_capget, &hdr, data))
		return -1;
	return !!(data[cap / 32].effective & (1u << (cap % 32)));
}

static long set_memlock(const char *p, rlim_t bytes)
{
	struct rlimit rl = { bytes, bytes };
	char what[160];
	long r;

	snprintf(what, sizeof(what), "%s: setrlimit(RLIMIT_MEMLOCK, %llu)", p,
		 (ull)bytes);
	errno = 0;
	r = setrlimit(RLIMIT_MEMLOCK, &rl);
	return report(what, r, errno);
}

static void dma_entry_limit(int cfd, unsigned char *page, unsigned char *hole)
{
	const char *p = "limit";
	uint64_t i, ok = 0, first_bad = 0;
	int err, bad = 0;

	dma_avail(p, cfd);
	vmlck(p);
	for (i = 0; i < NR_LIMIT; i++) {
		err = map_quiet(cfd, page, i * PG, PG);
		if (!err) {
			ok++;
		} else if (!bad) {
			bad = err;
			first_bad = i;
		}
	}
	{
		char label[160], text[96];

		snprintf(label, sizeof(label),
			 "limit: MAP_DMA(RW,vaddr=page,iova=0x0..0x%llx step 0x1000,size=0x1000) x%d",
			 (ull)((NR_LIMIT - 1) * PG), NR_LIMIT);
		snprintf(text, sizeof(text), "%llu ok", (ull)ok);
		note(label, "%s", text);
		if (bad)
			snprintf(text, sizeof(text), "iova=0x%llx -1 %s",
				 (ull)(first_bad * PG), errname(bad));
		else
			snprintf(text, sizeof(text), "none");
		note("limit: first failure", "%s", text);
	}
	dma_avail(p, cfd);
	vmlck(p);
	/* the 65536th mapping */
	map_dma(p, cfd, F_RW, page, "page", NR_LIMIT * PG, PG);
	map_dma(p, cfd, F_RW, page, "page", 0x20000000, PG);
	/* the checks that come before the limit ... */
	map_dma(p, cfd, F_RW, page, "page", 0x0, PG);
	map_dma(p, cfd, F_RW, page, "page", 0x20000800, PG);
	map_dma(p, cfd, F_RW, page, "page", 0x20000000, 0);
	map_dma(p, cfd, 0, page, "page", 0x20000000, PG);
	map_dma(p, cfd, F_VADDR, page, "page", 0x20000000, PG);
	/* ... and the ones that come after it */
	map_dma(p, cfd, F_RW, page, "page", 0xfee00000, PG);
	map_dma(p, cfd, F_RW, page, "page", 1ULL << 48, PG);
	map_dma(p, cfd, F_RW, hole, "hole", 0x20000000, PG);
	dma_avail(p, cfd);
	/* one freed entry can be used again, once */
	unmap_dma(p, cfd, 0, 0x5000, PG);
	dma_avail(p, cfd);
	map_dma(p, cfd, F_RW, page, "page", 0x20000000, PG);
	map_dma(p, cfd, F_RW, page, "page", 0x5000, PG);
	dma_avail(p, cfd);
	/* an empty unmap frees nothing */
	unmap_dma(p, cfd, 0, 0x30000000, PG);
	dma_avail(p, cfd);
	unmap_dma(p, cfd, 0, 0x20000000, PG);
	map_dma(p, cfd, F_RW, page, "page", 0x5000, PG);
	unmap_dma(p, cfd, U_ALL, 0, 0);
	dma_avail(p, cfd);
	vmlck(p);
	map_dma(p, cfd, F_RW, page, "page", NR_LIMIT * PG, PG);
	unmap_dma(p, cfd, U_ALL, 0, 0);
}

static void memlock(int cfd, unsigned char *buf16, unsigned char *one)
{
	const char *p = "memlock";

	drop_cap("memlock: capset(drop CAP_IPC_LOCK)", CAP_IPC_LOCK);
	note("memlock: CAP_IPC_LOCK effective", "%s", has_cap(CAP_IPC_LOCK) ? "1" : "0");
	set_memlock(p, 64 * 1024);
	vmlck(p);
	map_dma(p, cfd, F_RW, buf16, "buf16", 0x100000, 8 * PG);
	vmlck(p);
	/* the same pages again: counted twice */
	map_dma(p, cfd, F_RW, buf16, "buf16", 0x200000, 8 * PG);
	vmlck(p);
	map_dma(p, cfd, F_RW, one, "one", 0x300000, PG);
	vmlck(p);
	dma_avail(p, cfd);
	unmap_dma(p, cfd, 0, 0x100000, 8 * PG);
	vmlck(p);
	map_dma(p, cfd, F_RW, one, "one", 0x300000, PG);
	vmlck(p);
	/* a request crossing the limit pins nothing */
	map_dma(p, cfd, F_RW, buf16, "buf16", 0x400000, 16 * PG);
	vmlck(p);
	unmap_dma(p, cfd, 0, 0x400000, 16 * PG);
	map_dma(p, cfd, F_READ, buf16 + 8 * PG, "buf16+0x8000", 0x400000,
		8 * PG);
	vmlck(p);
	unmap_dma(p, cfd, U_ALL, 0, 0);
	vmlck(p);
	/* exactly the limit */
	map_dma(p, cfd, F_RW, buf16, "buf16", 0x400000, 16 * PG);
	vmlck(p);
	map_dma(p, cfd, F_RW, one, "one", 0x300000, PG);
	unmap_dma(p, cfd, U_ALL, 0, 0);
	vmlck(p);
	/* mlock()ed memory counts against the same limit */
	{
		long r;

		errno = 0;
		r = mlock(buf16, 2 * PG);
		report("memlock: mlock(buf16, 0x2000)", r, errno);
	}
	vmlck(p);
	map_dma(p, cfd, F_RW, buf16 + 2 * PG, "buf16+0x2000", 0x400000,
		14 * PG);
	vmlck(p);
	map_dma(p, cfd, F_RW, buf16, "buf16", 0x500000, PG);
	unmap_dma(p, cfd, U_ALL, 0, 0);
	{
		long r;

		errno = 0;
		r = munlock(buf16, 2 * PG);
		report("memlock: munlock(buf16, 0x2000)", r, errno);
	}
	vmlck(p);
	/* a lower limit, then none at all */
	set_memlock(p, 16 * 1024);
	map_dma(p, cfd, F_RW, buf16, "buf16", 0x100000, 4 * PG);
	map_dma(p, cfd, F_RW, buf16, "buf16", 0x200000, 5 * PG);
	vmlck(p);
	set_memlock(p, 0);
	map_dma(p, cfd, F_RW, one, "one", 0x300000, PG);
	/* the existing pins stay; unmapping gives them back */
	vmlck(p);
	unmap_dma(p, cfd, U_ALL, 0, 0);
	vmlck(p);
	dma_avail(p, cfd);
}

int main(void)
{
	unsigned char *page, *one, *buf16, *hole;
	int cfd, gfd;

	setvbuf(stdout, NULL, _IOLBF, 0);
	page = alloc_pages(1, PROT_READ | PROT_WRITE);
	one = alloc_pages(1, PROT_READ | PROT_WRITE);
	buf16 = alloc_pages(16, PROT_READ | PROT_WRITE);
	hole = alloc_pages(1, PROT_READ | PROT_WRITE);
	munmap(hole, PG);

	cfd = open_report("open " CONTAINER, CONTAINER, O_RDWR);
	if (cfd < 0)
		return 1;
	gfd = open_report("open " GROUP, GROUP, O_RDWR);
	if (gfd < 0)
		return 1;
	set_container("setup", gfd, cfd);
	group_status("setup", gfd);
	set_iommu("setup", cfd, VFIO_TYPE1v2_IOMMU);
	note("setup: CAP_IPC_LOCK effective", "%s", has_cap(CAP_IPC_LOCK) ? "1" : "0");

	dma_entry_limit(cfd, page, hole);
	memlock(cfd, buf16, one);

	close_report("close group", gfd);
	close_report("close container", cfd);
	return 0;
}
