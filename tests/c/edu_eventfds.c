/*
 * edu_eventfds.c - the eventfds a VMM hands to VFIO and then only writes to:
 *
 *   - VFIO_DEVICE_IOEVENTFD: "when this eventfd is signalled, write DATA to BAR offset POS"
 *     (KVM signals it on a guest's doorbell write; here the program writes the eventfd itself);
 *   - the INTx unmask eventfd (SET_IRQS INTX, EVENTFD|UNMASK): signalling it unmasks the
 *     line, as the UNMASK ioctl does (KVM's resampler signals it on a guest EOI).
 *
 * Both take effect asynchronously in the kernel (a virqfd work item), so the program waits for
 * the effect with a bounded poll and prints only the outcome, never a time.
 *
 *   edu_eventfds [BDF]        (default 0000:00:01.0)
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <linux/vfio.h>

#include "probe.h"
#include "labels.h"
#include "edu_vfio.h"

static void signal_efd(int fd)
{
	uint64_t one = 1;
	if (write(fd, &one, 8) != 8)
		die("eventfd write");
}

/* Wait up to 2 s for the liveness register to read 'want'. */
static int liveness_becomes(uint32_t want)
{
	for (int i = 0; i < 400; i++) {
		if (rd(EDU_LIVENESS) == want)
			return 1;
		usleep(5000);
	}
	return 0;
}

/* The trigger eventfd's count after waiting up to 'ms' for one (0: none came). */
static uint64_t triggered(int efd, int ms)
{
	uint64_t n = 0;
	struct pollfd p = { .fd = efd, .events = POLLIN };
	if (poll(&p, 1, ms) == 1 && read(efd, &n, 8) != 8)
		n = 0;
	return n;
}

static int ioeventfd(const char *label, int fd, uint32_t flags, uint64_t pos, uint64_t data)
{
	struct vfio_device_ioeventfd ioe = {
		.argsz = sizeof ioe, .flags = flags, .offset = BAR0 + pos, .data = data, .fd = fd,
	};
	int ret = ioctl(edu.dev, VFIO_DEVICE_IOEVENTFD, &ioe);
	return (int)report(label, ret, errno);
}

static int set_irq_fd(const char *label, uint32_t action, int fd)
{
	char buf[sizeof(struct vfio_irq_set) + sizeof(int)];
	struct vfio_irq_set *irq = (struct vfio_irq_set *)buf;
	*irq = (struct vfio_irq_set){ .argsz = sizeof buf, .index = VFIO_PCI_INTX_IRQ_INDEX,
		.flags = VFIO_IRQ_SET_DATA_EVENTFD | action, .count = 1 };
	memcpy(irq->data, &fd, sizeof fd);
	int ret = ioctl(edu.dev, VFIO_DEVICE_SET_IRQS, irq);
	return (int)report(label, ret, errno);
}

int main(int argc, char **argv)
{
	const char *bdf = argc > 1 ? argv[1] : "0000:00:01.0";
	edu_open(bdf);
	edu_get_device(bdf);
	set_command(0x0102);	/* memory decode + bus master; INTx enabled */

	/* ---- ioeventfds: a signalled eventfd becomes a BAR write. */
	int ioe = eventfd(0, EFD_NONBLOCK);
	int ioe2 = eventfd(0, 0);
	wr(EDU_LIVENESS, 0);
	note("liveness before", "%#010x", rd(EDU_LIVENESS));
	ioeventfd("IOEVENTFD(liveness, 4 bytes, 0x12345678)", ioe, VFIO_DEVICE_IOEVENTFD_32, EDU_LIVENESS,
		  0x12345678);
	note("liveness, registered, not signalled", "%#010x", rd(EDU_LIVENESS));
	signal_efd(ioe);
	note("liveness after one signal", "%s",
	     liveness_becomes(~0x12345678u) ? "0xedcba987 (the ioeventfd wrote 0x12345678)" : "unchanged");
	uint64_t left = 7;
	note("eventfd counter after the write", "%s",
	     read(ioe, &left, 8) < 0 && errno == EAGAIN ? "0 (consumed by VFIO)" : "not consumed");
	/* A second registration on another eventfd for another value; both fire independently. */
	ioeventfd("IOEVENTFD(liveness, 4 bytes, 0xbeef)", ioe2, VFIO_DEVICE_IOEVENTFD_32, EDU_LIVENESS,
		  0xbeef);
	wr(EDU_LIVENESS, 0);
	signal_efd(ioe2);
	note("liveness after the second one", "%s",
	     liveness_becomes(~0x0000beefu) ? "0xffff4110 (the ioeventfd wrote 0xbeef)" : "unchanged");
	signal_efd(ioe);
	note("liveness after the first again", "%s",
	     liveness_becomes(~0x12345678u) ? "0xedcba987" : "unchanged");
	/* With memory decode off the write is dropped (the eventfd is still consumed). */
	set_command(0x0100);
	signal_efd(ioe2);
	usleep(200000);
	set_command(0x0102);
	note("liveness after a signal with memory decode off", "%#010x", rd(EDU_LIVENESS));
	note("that eventfd's counter", "%s",
	     poll(&(struct pollfd){ .fd = ioe2, .events = POLLIN }, 1, 0) == 0 ? "0 (consumed)" : "pending");
	/* Unregistered (fd -1 with the same offset, data and size): signals do nothing now. */
	ioeventfd("IOEVENTFD(liveness, 4 bytes, 0x12345678, fd -1)", -1, VFIO_DEVICE_IOEVENTFD_32,
		  EDU_LIVENESS, 0x12345678);
	wr(EDU_LIVENESS, 0);
	signal_efd(ioe);
	usleep(200000);
	note("liveness after a signal once unregistered", "%#010x", rd(EDU_LIVENESS));
	note("the unregistered eventfd's counter", "%s",
	     read(ioe, &left, 8) == 8 ? "1 (nobody consumed it)" : "empty");

	/* ---- INTx: the unmask eventfd. */
	int trig = eventfd(0, 0), unmask = eventfd(0, 0);
	set_irq_fd("SET_IRQS(INTX, EVENTFD|TRIGGER)", VFIO_IRQ_SET_ACTION_TRIGGER, trig);
	set_irq_fd("SET_IRQS(INTX, EVENTFD|UNMASK)", VFIO_IRQ_SET_ACTION_UNMASK, unmask);
	wr(EDU_IRQ_RAISE, 0x1);
	note("raise: trigger count", "%llu", (unsigned long long)triggered(trig, 2000));
	/* Automasked: acknowledging and raising again does not signal. */
	wr(EDU_IRQ_ACK, rd(EDU_IRQ_STATUS));
	wr(EDU_IRQ_RAISE, 0x2);
	note("raise while masked: trigger count", "%llu", (unsigned long long)triggered(trig, 300));
	/* Signalling the unmask eventfd unmasks; the line is still asserted, so it fires again. */
	signal_efd(unmask);
	note("unmask eventfd with the line asserted: trigger count", "%llu",
	     (unsigned long long)triggered(trig, 2000));
	uint64_t u = 0;
	note("unmask eventfd's counter", "%s",
	     poll(&(struct pollfd){ .fd = unmask, .events = POLLIN }, 1, 0) == 0 ? "0 (consumed)" :
	     (read(unmask, &u, 8), "pending"));
	/* Acknowledge, unmask with the line low: nothing fires, the next raise does. */
	wr(EDU_IRQ_ACK, rd(EDU_IRQ_STATUS));
	signal_efd(unmask);
	note("unmask eventfd with the line low: trigger count", "%llu",
	     (unsigned long long)triggered(trig, 300));
	wr(EDU_IRQ_RAISE, 0x4);
	note("raise after the unmask: trigger count", "%llu", (unsigned long long)triggered(trig, 2000));
	wr(EDU_IRQ_ACK, rd(EDU_IRQ_STATUS));
	/* Unmask eventfd removed (fd -1): signalling it no longer unmasks. */
	set_irq_fd("SET_IRQS(INTX, EVENTFD|UNMASK, fd -1)", VFIO_IRQ_SET_ACTION_UNMASK, -1);
	wr(EDU_IRQ_RAISE, 0x1);
	signal_efd(unmask);
	note("raise while masked, removed unmask eventfd signalled: trigger count", "%llu",
	     (unsigned long long)triggered(trig, 300));
	wr(EDU_IRQ_ACK, rd(EDU_IRQ_STATUS));

	edu_close();
	note("done", "ok");
	return 0;
}
