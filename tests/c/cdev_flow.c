/*
 * cdev_flow.c - the VFIO device cdev flow with the edu device (0000:00:01.0, group 1, the
 * first VFIO device: /dev/vfio/devices/vfio0), as a fidelity probe:
 *
 *   - an unbound cdev: every device ioctl, read and write refused;
 *   - VFIO_DEVICE_BIND_IOMMUFD: argument checks, the bind, out_devid, a second bind;
 *   - the vfio-pci ioctls and config/BAR access on the bound cdev, MSI on an eventfd;
 *   - an IOAS with two buffers mapped; edu DMA before ATTACH (blocked: the device sits in
 *     the blocking domain), VFIO_DEVICE_ATTACH_IOMMUFD_PT (pt_id written back: the automatic
 *     HWPT), DMA RAM -> device -> RAM through the IOAS, IOMMU_DESTROY of what the attachment
 *     holds (EBUSY), a second ATTACH to another IOAS (replace: a new automatic HWPT, the old
 *     one gone), ATTACH by HWPT id, DETACH (DMA blocked again, the automatic HWPT gone);
 *   - busy rules: the group node while the cdev is bound; a second cdev fd of the device;
 *     BIND while the group node is open (container attached, a device fd open);
 *   - close orders: device fd then iommufd, and iommufd first (the bound device keeps the
 *     iommufd context, DMA still translates), after which nothing is left: the group opens,
 *     a new bind gets the first ids again.
 *
 * Output: one line per observation, "<what> = <value>" (calls: the return value or
 * "-1 <ERRNONAME>"), labels unique (labels.h).  Nothing printed depends on addresses, pids or
 * timing.  fd numbers are printed: the program must start with only 0, 1 and 2 open.  The
 * expected output (tests/expected/cdev_flow.txt) is derived from the upstream kernel source,
 * line by line (cdev_flow.notes.md); no kernel with iommufd was available to record it.
 *
 * Build: gcc -O2 -Wall -Werror -o cdev_flow cdev_flow.c   (any <linux/vfio.h>: the cdev and
 * iommufd uAPI comes from iommufd_cdev.h when the system headers lack it)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <linux/vfio.h>
#include "probe.h"
#include "labels.h"
#include "iommufd_cdev.h"
#include "dma_pattern.h"
#include "edu_regs.h"

#define BDF "0000:00:01.0"
#define CDEV "/dev/vfio/devices/vfio0"
#define GROUP "/dev/vfio/1"
#define PG 0x1000UL
#define BUFSZ 0x2000UL
#define XFER 0x800		/* inside the edu's 4 KiB buffer, not reaching its end */

typedef unsigned long long ull;

#define IOVA1 0x100000ULL
#define IOVA2 0x200000ULL

static int dev = -1;		/* the cdev the edu helpers use */

/* ------------------------------------------------------------------ iommufd */

static long bind(const char *what, int cdev, int32_t iommufd, uint32_t argsz,
		 uint32_t flags, int print_devid)
{
	/*
	 * struct vfio_device_bind_iommufd as of 6.17 (token_uuid_ptr at 16), spelled out: the
	 * system header's version may stop at out_devid.
	 */
	struct {
		uint32_t argsz;
		uint32_t flags;
		int32_t iommufd;
		uint32_t out_devid;
		uint64_t token_uuid_ptr;
	} a;
	static const unsigned char uuid[16] = { 0x12, 0x34 };
	long r;

	memset(&a, 0, sizeof(a));
	a.argsz = argsz;
	a.flags = flags;
	a.iommufd = iommufd;
	a.out_devid = 0xffffffff;
	a.token_uuid_ptr = (uintptr_t)uuid;
	r = ioc(what, cdev, VFIO_DEVICE_BIND_IOMMUFD, &a);
	if (print_devid)
		printf("%s.out_devid = %u\n", cur, a.out_devid);
	return r;
}

static uint32_t ioas_alloc(const char *what, int iommufd)
{
	struct iommu_ioas_alloc a;

	memset(&a, 0, sizeof(a));
	a.size = 12;
	a.out_ioas_id = 0xffffffff;
	ioc(what, iommufd, IOMMU_IOAS_ALLOC, &a);
	printf("%s.out_ioas_id = %u\n", cur, a.out_ioas_id);
	return a.out_ioas_id;
}

static void ioas_map(const char *what, int iommufd, uint32_t ioas, void *va,
		     uint64_t iova, uint64_t len)
{
	struct iommu_ioas_map m;

	memset(&m, 0, sizeof(m));
	m.size = 40;
	m.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE |
		  IOMMU_IOAS_MAP_WRITEABLE;
	m.ioas_id = ioas;
	m.user_va = (uintptr_t)va;
	m.length = len;
	m.iova = iova;
	ioc(what, iommufd, IOMMU_IOAS_MAP, &m);
}

static void destroy(const char *what, int iommufd, uint32_t id)
{
	struct iommu_destroy d = { .size = 8, .id = id };

	ioc(what, iommufd, IOMMU_DESTROY, &d);
}

static uint32_t attach(const char *what, int cdev, uint32_t argsz,
		       uint32_t flags, uint32_t pt_id)
{
	struct vfio_device_attach_iommufd_pt a;

	memset(&a, 0, sizeof(a));
	a.argsz = argsz;
	a.flags = flags;
	a.pt_id = pt_id;
	if (ioc(what, cdev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &a) == 0)
		printf("%s.pt_id = %u\n", cur, a.pt_id);
	return a.pt_id;
}

static void detach(const char *what, int cdev, uint32_t argsz, uint32_t flags)
{
	struct vfio_device_detach_iommufd_pt d;

	memset(&d, 0, sizeof(d));
	d.argsz = argsz;
	d.flags = flags;
	ioc(what, cdev, VFIO_DEVICE_DETACH_IOMMUFD_PT, &d);
}

/* ------------------------------------------------------------------ edu */

static void reg_write(unsigned int off, uint32_t v, const char *name)
{
	char label[160];
	long r;

	snprintf(label, sizeof(label), "edu: write %s (0x%02x) 0x%08x", name, off, v);
	errno = 0;
	r = pwrite(dev, &v, 4, BAR0 + off);
	report(label, r, errno);
}

/* One DMA transfer: program it, start it, wait (bounded) for RUN to clear. */
static void dma(uint64_t src, uint64_t dst, uint32_t cnt, uint32_t cmd, const char *what)
{
	char label[200];
	double end;
	uint32_t v;

	snprintf(label, sizeof(label), "dma: %s: src=0x%llx dst=0x%llx cnt=0x%x cmd=0x%x",
		 what, (ull)src, (ull)dst, cnt, cmd);
	note(label, "start");
	reg_write(EDU_DMA_SRC, (uint32_t)src, "DMA src");
	reg_write(EDU_DMA_DST, (uint32_t)dst, "DMA dst");
	reg_write(EDU_DMA_CNT, cnt, "DMA count");
	reg_write(EDU_DMA_CMD, cmd, "DMA cmd");
	end = edu_now() + 5.0;
	for (;;) {
		v = edu_peek(dev, EDU_DMA_CMD);
		if (v != 0xffffffffu && !(v & DMA_RUN))
			break;
		if (edu_now() > end) {
			v = 0xffffffffu;
			break;
		}
		usleep(1000);
	}
	note("dma: wait DMA cmd RUN clear", "%s", v == 0xffffffffu ? "timeout" : "done");
}

static int irq_wait(int efd, int ms, const char *what)
{
	struct pollfd pfd = { .fd = efd, .events = POLLIN };
	char label[160];
	uint64_t cnt = 0;
	int r;

	snprintf(label, sizeof(label), "irq: %s", what);
	errno = 0;
	r = poll(&pfd, 1, ms);
	if (r <= 0) {
		note(label, r < 0 ? "poll failed" : "none");
		return 0;
	}
	if (read(efd, &cnt, sizeof(cnt)) != sizeof(cnt)) {
		note(label, "read -1 %s", errname(errno));
		return 0;
	}
	note(label, "fired");
	return 1;
}

static void *buffer(void)
{
	void *p = mmap(NULL, BUFSZ, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	return p;
}

/* ------------------------------------------------------------------ the flow */

int main(void)
{
	struct vfio_device_info dinfo;
	struct vfio_region_info rinfo;
	struct vfio_irq_info iinfo;
	unsigned char *buf1, *buf2, *buf3;
	uint32_t ioas, ioas2, hwpt, v, cmdreg;
	uint16_t ids[2];
	int cdev, cdev2, iommufd, nullfd, efd, gfd, cfd, dfd;
	long r;

	setvbuf(stdout, NULL, _IOLBF, 0);
	buf1 = buffer();
	buf2 = buffer();
	buf3 = buffer();

	/* ---- an unbound cdev grants nothing ---- */
	cdev = open_report("open " CDEV, CDEV, O_RDWR);
	dev = cdev;
	memset(&dinfo, 0, sizeof(dinfo));
	dinfo.argsz = sizeof(dinfo);
	ioc("unbound: GET_INFO", cdev, VFIO_DEVICE_GET_INFO, &dinfo);
	memset(&rinfo, 0, sizeof(rinfo));
	rinfo.argsz = sizeof(rinfo);
	rinfo.index = VFIO_PCI_BAR0_REGION_INDEX;
	ioc("unbound: GET_REGION_INFO(BAR0)", cdev, VFIO_DEVICE_GET_REGION_INFO, &rinfo);
	memset(&iinfo, 0, sizeof(iinfo));
	iinfo.argsz = sizeof(iinfo);
	iinfo.index = VFIO_PCI_MSI_IRQ_INDEX;
	ioc("unbound: GET_IRQ_INFO(MSI)", cdev, VFIO_DEVICE_GET_IRQ_INFO, &iinfo);
	ioc_val("unbound: RESET", cdev, VFIO_DEVICE_RESET, 0);
	attach("unbound: ATTACH_IOMMUFD_PT(pt_id=1)", cdev, 12, 0, 1);
	detach("unbound: DETACH_IOMMUFD_PT", cdev, 8, 0);
	ioc_val("unbound: IOMMU_DESTROY's number(NULL)", cdev, IOMMU_DESTROY, 0);
	errno = 0;
	r = pread(cdev, &v, 4, CFG);
	report("unbound: pread(config, 4)", r, errno);
	errno = 0;
	r = pread(cdev, &v, 4, BAR0);
	report("unbound: pread(BAR0, 4)", r, errno);
	v = 0;
	errno = 0;
	r = pwrite(cdev, &v, 4, BAR0 + EDU_IRQ_ACK);
	report("unbound: pwrite(BAR0+0x64, 4)", r, errno);

	/* ---- VFIO_DEVICE_BIND_IOMMUFD ---- */
	iommufd = open_report("open /dev/iommu", "/dev/iommu", O_RDWR);
	nullfd = open_report("open /dev/null", "/dev/null", O_RDWR);
	bind("bind: BIND_IOMMUFD(argsz=8)", cdev, iommufd, 8, 0, 0);
	bind("bind: BIND_IOMMUFD(iommufd=-1)", cdev, -1, 16, 0, 0);
	bind("bind: BIND_IOMMUFD(flags=0x2)", cdev, iommufd, 16, 2, 0);
	bind("bind: BIND_IOMMUFD(flags=TOKEN,argsz=24,token)", cdev, iommufd, 24,
	     VFIO_DEVICE_BIND_FLAG_TOKEN, 0);
	bind("bind: BIND_IOMMUFD(iommufd=/dev/null)", cdev, nullfd, 16, 0, 0);
	bind("bind: BIND_IOMMUFD(iommufd=99,closed)", cdev, 99, 16, 0, 0);
	close_report("close /dev/null", nullfd);
	bind("bind: BIND_IOMMUFD(/dev/iommu)", cdev, iommufd, 16, 0, 1);
	bind("bind: BIND_IOMMUFD(/dev/iommu) again", cdev, iommufd, 16, 0, 0);
	destroy("bind: IOMMU_DESTROY(devid 1)", iommufd, 1);

	/* ---- the device through the bound cdev ---- */
	memset(&dinfo, 0, sizeof(dinfo));
	dinfo.argsz = sizeof(dinfo);
	if (ioc("device: GET_INFO", cdev, VFIO_DEVICE_GET_INFO, &dinfo) == 0)
		note("device: GET_INFO", "flags=0x%x num_regions=%u num_irqs=%u",
		     dinfo.flags, dinfo.num_regions, dinfo.num_irqs);
	memset(&rinfo, 0, sizeof(rinfo));
	rinfo.argsz = sizeof(rinfo);
	rinfo.index = VFIO_PCI_BAR0_REGION_INDEX;
	if (ioc("device: GET_REGION_INFO(BAR0)", cdev, VFIO_DEVICE_GET_REGION_INFO, &rinfo) == 0)
		note("device: GET_REGION_INFO(BAR0)", "flags=0x%x size=0x%llx offset=0x%llx",
		     rinfo.flags, (ull)rinfo.size, (ull)rinfo.offset);
	memset(&iinfo, 0, sizeof(iinfo));
	iinfo.argsz = sizeof(iinfo);
	iinfo.index = VFIO_PCI_MSI_IRQ_INDEX;
	if (ioc("device: GET_IRQ_INFO(MSI)", cdev, VFIO_DEVICE_GET_IRQ_INFO, &iinfo) == 0)
		note("device: GET_IRQ_INFO(MSI)", "flags=0x%x count=%u", iinfo.flags,
		     iinfo.count);
	{
		struct vfio_pci_hot_reset h;

		memset(&h, 0, sizeof(h));
		h.argsz = sizeof(h);
		h.count = 0;
		ioc("device: PCI_HOT_RESET(count=0)", cdev, VFIO_DEVICE_PCI_HOT_RESET, &h);
	}
	{
		struct {
			struct vfio_pci_hot_reset h;
			int32_t fd;
		} h;

		memset(&h, 0, sizeof(h));
		h.h.argsz = sizeof(h);
		h.h.count = 1;
		h.fd = iommufd;
		ioc("device: PCI_HOT_RESET(count=1)", cdev, VFIO_DEVICE_PCI_HOT_RESET, &h);
	}
	ioc_val("device: unknown ioctl _IO(';', 130)", cdev, _IO(VFIO_TYPE, 130), 0);
	errno = 0;
	r = pread(cdev, ids, 4, CFG);
	report("device: pread(config, 4)", r, errno);
	note("device: vendor:device", "%04x:%04x", ids[0], ids[1]);
	cmdreg = 0x6;		/* memory space, bus master */
	errno = 0;
	r = pwrite(cdev, &cmdreg, 2, CFG + 4);
	report("device: pwrite(config COMMAND, MEM|MASTER)", r, errno);
	errno = 0;
	r = pread(cdev, &v, 4, BAR0 + EDU_ID);
	report("device: pread(BAR0 ID)", r, errno);
	note("device: edu ID", "0x%08x", v);
	errno = 0;
	efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	report("irq: eventfd", efd, errno);
	{
		struct {
			struct vfio_irq_set s;
			int32_t fd;
		} a;

		memset(&a, 0, sizeof(a));
		a.s.argsz = sizeof(a);
		a.s.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
		a.s.index = VFIO_PCI_MSI_IRQ_INDEX;
		a.s.count = 1;
		a.fd = efd;
		ioc("irq: SET_IRQS(MSI,EVENTFD|TRIGGER,efd)", cdev, VFIO_DEVICE_SET_IRQS, &a);
	}

	/* ---- an IOAS, and DMA before ATTACH ---- */
	ioas = ioas_alloc("ioas: IOAS_ALLOC", iommufd);
	ioas_map("ioas: IOAS_MAP(buf1,iova=0x100000,0x2000)", iommufd, ioas, buf1, IOVA1, BUFSZ);
	ioas_map("ioas: IOAS_MAP(buf2,iova=0x200000,0x2000)", iommufd, ioas, buf2, IOVA2, BUFSZ);
	fill(buf1, BUFSZ, 1);
	memset(buf2, 0xcc, BUFSZ);
	dma(IOVA1, EDU_BUF, XFER, DMA_RUN, "not attached: buf1 -> device");
	dma(EDU_BUF, IOVA2, XFER, DMA_RUN | DMA_TO_RAM, "not attached: device -> buf2");
	describe("dma: not attached: buf2", buf2, BUFSZ, 1, 0xcc);

	/* ---- VFIO_DEVICE_ATTACH_IOMMUFD_PT ---- */
	attach("attach: ATTACH_IOMMUFD_PT(pt_id=99)", cdev, 12, 0, 99);
	attach("attach: ATTACH_IOMMUFD_PT(pt_id=devid)", cdev, 12, 0, 1);
	attach("attach: ATTACH_IOMMUFD_PT(argsz=8)", cdev, 8, 0, ioas);
	attach("attach: ATTACH_IOMMUFD_PT(flags=0x2)", cdev, 12, 2, ioas);
	hwpt = attach("attach: ATTACH_IOMMUFD_PT(ioas)", cdev, 12, 0, ioas);
	dma(IOVA1, EDU_BUF, XFER, DMA_RUN, "attached: buf1 -> device");
	dma(EDU_BUF, IOVA2, XFER, DMA_RUN | DMA_TO_RAM | DMA_IRQ, "attached: device -> buf2, irq");
	irq_wait(efd, 5000, "MSI after DMA");
	v = edu_peek(dev, EDU_IRQ_STATUS);
	note("edu: irq status", "0x%08x", v);
	reg_write(EDU_IRQ_ACK, IRQ_DMA, "interrupt ack");
	describe("dma: attached: buf2[0x0000..0x0800]", buf2, XFER, 1, 0xcc);
	describe("dma: attached: buf2[0x0800..0x2000]", buf2 + XFER, BUFSZ - XFER, 1, 0xcc);
	destroy("attach: IOMMU_DESTROY(ioas)", iommufd, ioas);
	destroy("attach: IOMMU_DESTROY(hwpt)", iommufd, hwpt);
	destroy("attach: IOMMU_DESTROY(devid 1)", iommufd, 1);
	attach("attach: ATTACH_IOMMUFD_PT(ioas) again", cdev, 12, 0, ioas);

	/* ---- a second ATTACH replaces ---- */
	ioas2 = ioas_alloc("replace: IOAS_ALLOC", iommufd);
	memset(buf3, 0xcc, BUFSZ);
	ioas_map("replace: IOAS_MAP(buf3,iova=0x200000,0x2000)", iommufd, ioas2, buf3, IOVA2,
		 BUFSZ);
	hwpt = attach("replace: ATTACH_IOMMUFD_PT(ioas2)", cdev, 12, 0, ioas2);
	destroy("replace: IOMMU_DESTROY(the first automatic hwpt)", iommufd, 3);
	destroy("replace: IOMMU_DESTROY(ioas)", iommufd, ioas);
	memset(buf2, 0xcc, BUFSZ);
	dma(EDU_BUF, IOVA2, XFER, DMA_RUN | DMA_TO_RAM, "replaced: device -> iova 0x200000");
	describe("dma: replaced: buf3[0x0000..0x0800]", buf3, XFER, 1, 0xcc);
	describe("dma: replaced: buf2", buf2, BUFSZ, 1, 0xcc);
	attach("replace: ATTACH_IOMMUFD_PT(hwpt)", cdev, 12, 0, hwpt);

	/* ---- VFIO_DEVICE_DETACH_IOMMUFD_PT ---- */
	detach("detach: DETACH_IOMMUFD_PT(argsz=4)", cdev, 4, 0);
	detach("detach: DETACH_IOMMUFD_PT(flags=0x2)", cdev, 8, 2);
	detach("detach: DETACH_IOMMUFD_PT", cdev, 8, 0);
	destroy("detach: IOMMU_DESTROY(hwpt)", iommufd, hwpt);
	memset(buf3, 0xcc, BUFSZ);
	dma(EDU_BUF, IOVA2, XFER, DMA_RUN | DMA_TO_RAM, "detached: device -> iova 0x200000");
	describe("dma: detached: buf3", buf3, BUFSZ, 1, 0xcc);
	detach("detach: DETACH_IOMMUFD_PT again", cdev, 8, 0);
	attach("detach: ATTACH_IOMMUFD_PT(ioas2)", cdev, 12, 0, ioas2);

	/* ---- busy rules while bound ---- */
	gfd = open_report("busy: open " GROUP, GROUP, O_RDWR);
	if (gfd >= 0)
		close(gfd);
	cdev2 = open_report("busy: open " CDEV " again", CDEV, O_RDWR);
	bind("busy: second cdev fd: BIND_IOMMUFD", cdev2, iommufd, 16, 0, 0);
	close_report("busy: close the second cdev fd", cdev2);

	/* ---- close the device fd, then the iommufd ---- */
	{
		struct vfio_irq_set s;

		memset(&s, 0, sizeof(s));
		s.argsz = sizeof(s);
		s.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
		s.index = VFIO_PCI_MSI_IRQ_INDEX;
		ioc("irq: SET_IRQS(MSI,NONE|TRIGGER,count=0)", cdev, VFIO_DEVICE_SET_IRQS, &s);
	}
	close_report("close efd", efd);
	close_report("order 1: close cdev", cdev);
	close_report("order 1: close /dev/iommu", iommufd);

	/* ---- the group path now, and BIND while the group node is open ---- */
	gfd = open_report("group: open " GROUP, GROUP, O_RDWR);
	cfd = open_report("group: open /dev/vfio/vfio", "/dev/vfio/vfio", O_RDWR);
	ioc("group: GROUP_SET_CONTAINER", gfd, VFIO_GROUP_SET_CONTAINER, &cfd);
	ioc_val("group: SET_IOMMU(TYPE1v2)", cfd, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU);
	errno = 0;
	dfd = ioctl(gfd, VFIO_GROUP_GET_DEVICE_FD, BDF);
	report("group: GROUP_GET_DEVICE_FD", dfd, errno);
	cdev = open_report("group: open " CDEV, CDEV, O_RDWR);
	dev = cdev;
	iommufd = open_report("group: open /dev/iommu", "/dev/iommu", O_RDWR);
	bind("group: BIND_IOMMUFD (group open, device fd open)", cdev, iommufd, 16, 0, 0);
	if (dfd >= 0)
		close_report("group: close the device fd", dfd);
	bind("group: BIND_IOMMUFD (group open)", cdev, iommufd, 16, 0, 0);
	bind("group: BIND_IOMMUFD(iommufd=-1) (group open)", cdev, -1, 16, 0, 0);
	close_report("group: close " GROUP, gfd);
	bind("group: BIND_IOMMUFD (group closed)", cdev, iommufd, 16, 0, 1);
	close_report("group: close /dev/vfio/vfio", cfd);

	/* ---- close the iommufd first: the bound device keeps its context ---- */
	ioas = ioas_alloc("order 2: IOAS_ALLOC", iommufd);
	ioas_map("order 2: IOAS_MAP(buf1,iova=0x100000,0x2000)", iommufd, ioas, buf1, IOVA1,
		 BUFSZ);
	attach("order 2: ATTACH_IOMMUFD_PT(ioas)", cdev, 12, 0, ioas);
	close_report("order 2: close /dev/iommu", iommufd);
	errno = 0;
	r = pwrite(cdev, &cmdreg, 2, CFG + 4);
	report("order 2: pwrite(config COMMAND, MEM|MASTER)", r, errno);
	memset(buf1, 0xcc, BUFSZ);
	dma(EDU_BUF, IOVA1, XFER, DMA_RUN | DMA_TO_RAM, "order 2: device -> buf1");
	describe("dma: order 2: buf1[0x0000..0x0800]", buf1, XFER, 1, 0xcc);
	close_report("order 2: close cdev", cdev);

	/* ---- nothing is left behind ---- */
	gfd = open_report("after: open " GROUP, GROUP, O_RDWR);
	if (gfd >= 0)
		close_report("after: close " GROUP, gfd);
	cdev = open_report("after: open " CDEV, CDEV, O_RDWR);
	iommufd = open_report("after: open /dev/iommu", "/dev/iommu", O_RDWR);
	bind("after: BIND_IOMMUFD", cdev, iommufd, 16, 0, 1);
	ioas_alloc("after: IOAS_ALLOC", iommufd);
	close_report("after: close cdev", cdev);
	close_report("after: close /dev/iommu", iommufd);
	return 0;
}
