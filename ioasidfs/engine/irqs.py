"""vfio-pci's interrupt layer: VFIO_DEVICE_GET_IRQ_INFO, VFIO_DEVICE_SET_IRQS, and the delivery
of a function's interrupts to the eventfds the user registered.

This is drivers/vfio/pci/vfio_pci_intrs.c with the ioctl halves of vfio_pci_core.c
(vfio_pci_ioctl_get_irq_info, vfio_pci_get_irq_count, vfio_pci_ioctl_set_irqs) and
vfio_main.c (vfio_set_irqs_validate_and_prepare), checked in the kernel's order so every errno
is the one the kernel gives (tests/expected/device_ioctls.notes.md lists the recorded answers).

How the pieces map onto the kernel:

* ``irq_type`` is ``vdev->irq_type``: at most one of INTx, MSI and MSI-X is active at a time;
  ``_NO_IRQ`` (VFIO_PCI_NUM_IRQS) means none.
* INTx is level-triggered and AUTOMASKED. The kernel masks a PCI 2.3 device with the
  *physical* Interrupt Disable bit of its command register (pci_check_and_mask_intx in the
  interrupt handler, pci_check_and_unmask_intx on UNMASK), so this module does exactly that
  through :meth:`PciFunction.config_write`; the function's own line logic then lowers and raises
  the line as the hardware would. Every model here implements Interrupt Disable and the
  Interrupt Status bit, i.e. pci_intx_mask_supported() is true (``vdev->pci_2_3``), so the
  irqchip-masking path of non-2.3 devices does not exist here.
* The host interrupt handler exists only while INTx is enabled (request_irq/free_irq): an
  assertion while INTx is not enabled reaches nobody. Because the line is level-triggered, a
  line that is already asserted when the handler is installed fires at once.
* MSI/MSI-X: enabling allocates ``start + count`` host vectors (``host_enable_msi`` /
  ``host_enable_msix``, what pci_alloc_irq_vectors does to the function); each vector may have
  an eventfd. A vector without one swallows its interrupts. The config-space layer hears of
  each MSI allocation through ``on_msi_vectors`` (vfio_msi_enable updates ``msi_qmax``).
* ERR and REQ are single eventfds (vfio_pci_set_ctx_trigger_single), signalled by
  :meth:`signal_error` (AER) and :meth:`signal_request` (the host asks for the device back).

Every :class:`EventSignal` taken here is closed exactly once: when replaced, when its index is
disabled, or at :meth:`release` (the device fd's last close).

Locking: the function's own lock serialises everything. The function calls the sink methods
(:meth:`intx`, :meth:`msi`, :meth:`msix`) with that lock held, and SET_IRQS needs to change the
function's command register, so one lock taken in one order (function first) cannot deadlock.
The kernel's igate mutex and irqlock spinlock collapse into it.
"""
from __future__ import annotations

import errno
import struct
from dataclasses import dataclass
from typing import Callable, Final

from ..devices.pci import (CAP_ID_EXP, COMMAND, COMMAND_INTX_DISABLE, INTERRUPT_PIN,
                           MSI_FLAGS_QMASK, MSIX_FLAGS, MSIX_FLAGS_QSIZE, STATUS, STATUS_INTERRUPT,
                           PciFunction)
from ..errors import KernelError
from ..uapi import vfio as V
from .argsz import copy_in, int_field
from .caller import Caller, EventSignal

INTX: Final = V.VFIO_PCI_INTX_IRQ_INDEX
MSI: Final = V.VFIO_PCI_MSI_IRQ_INDEX
MSIX: Final = V.VFIO_PCI_MSIX_IRQ_INDEX
ERR: Final = V.VFIO_PCI_ERR_IRQ_INDEX
REQ: Final = V.VFIO_PCI_REQ_IRQ_INDEX
_NO_IRQ: Final = V.VFIO_PCI_NUM_IRQS
"""``irq_type`` when no interrupt index is active (the kernel uses VFIO_PCI_NUM_IRQS too)."""

_U32_MAX: Final = 0xFFFFFFFF
_INFO_MINSZ: Final = V.IRQ_INFO.field_end("count")
_SET_MINSZ: Final = V.IRQ_SET.field_end("count")
_DATA_NONE: Final = V.VFIO_IRQ_SET_DATA_NONE
_DATA_BOOL: Final = V.VFIO_IRQ_SET_DATA_BOOL
_DATA_EVENTFD: Final = V.VFIO_IRQ_SET_DATA_EVENTFD
_ACTION_MASK: Final = V.VFIO_IRQ_SET_ACTION_MASK
_ACTION_UNMASK: Final = V.VFIO_IRQ_SET_ACTION_UNMASK
_ACTION_TRIGGER: Final = V.VFIO_IRQ_SET_ACTION_TRIGGER
_DATA_ELEMENT_SIZE: Final = {_DATA_NONE: 0, _DATA_BOOL: 1, _DATA_EVENTFD: 4}
"""Bytes per element of ``vfio_irq_set.data`` for each data type (u8 bools, s32 fds)."""
_S32: Final = struct.Struct("<i")

_INDEX_NAMES: Final = {INTX: "INTx", MSI: "MSI", MSIX: "MSI-X", ERR: "ERR", REQ: "REQ"}


def _einval(reason: str) -> KernelError:
    return KernelError(errno.EINVAL, f"VFIO_DEVICE_SET_IRQS: {reason}")


@dataclass
class _IntxContext:
    """The INTx ``vfio_pci_irq_ctx`` (exists while INTx is enabled).

    ``masked`` is the automask state: set by the interrupt handler, by MASK, or by the user's
    virtual INTx Disable; while set, the physical Interrupt Disable bit is set too.
    ``unmask_irqfd`` is the eventfd registered with EVENTFD|UNMASK (the kernel's virqfd)."""

    trigger: EventSignal | None
    masked: bool
    unmask_irqfd: EventSignal | None = None


@dataclass
class _TriggerSlot:
    """A single-eventfd index (ERR, REQ): ``vdev->err_trigger`` / ``vdev->req_trigger``."""

    trigger: EventSignal | None = None

    def drop(self) -> None:
        if self.trigger is not None:
            self.trigger.close()
            self.trigger = None


def _fd_at(data: bytes, index: int) -> int:
    value: int = _S32.unpack_from(data, 4 * index)[0]
    return value


class VfioPciIrqs:
    """vfio-pci's interrupt state of one open device, and the function's interrupt sink.

    Made when the device is first opened (it attaches itself to ``function``), undone by
    :meth:`release` at the last close.
    """

    def __init__(self, function: PciFunction) -> None:
        self.function = function
        self.lock = function.lock
        self.irq_type: int = _NO_IRQ
        self.virq_disabled = False
        """The user's *virtual* INTx Disable bit (vfio's ``virq_disabled``), set through
        :meth:`config_intx_disable` by the config-space layer."""
        self._intx: _IntxContext | None = None
        self._vectors: dict[int, EventSignal] = {}
        self._vectors_allocated = 0
        self._err = _TriggerSlot()
        self._req = _TriggerSlot()
        self.on_msi_vectors: Callable[[int], None] | None = None
        """Told how many vectors each MSI enable allocated: the config layer's
        ``VirtualConfig.msi_vectors_enabled``, which derives ``msi_qmax`` from it (vfio_msi_enable
        sets it). The config layer is made after this object, so it is wired afterwards."""
        function.attach(self)

    # ------------------------------------------------------------------ what the device has

    def _msi_capable_log2(self) -> int:
        msi = self.function.msi
        if msi is None:
            return 0
        return (self.function.config_read(msi.flags_offset, 2) & MSI_FLAGS_QMASK) >> 1

    @property
    def is_pcie(self) -> bool:
        """pci_is_pcie: the function has a PCI Express capability (only then is there ERR)."""
        return any(cap.id == CAP_ID_EXP for cap in self.function.capabilities())

    def irq_count(self, index: int) -> int:
        """vfio_pci_get_irq_count: how many interrupts ``index`` has (0 = not available).

        INTx: one if the Interrupt Pin register is non-zero (the kernel reads the virtual
        copy, which equals the physical one for every model here). MSI: 2^(Multiple Message
        Capable). MSI-X: the table size. ERR: one on PCI Express only. REQ: always one."""
        function = self.function
        if index == INTX:
            return 1 if function.config_read(INTERRUPT_PIN, 1) else 0
        if index == MSI:
            return 1 << self._msi_capable_log2() if function.msi is not None else 0
        if index == MSIX:
            if function.msix is None:
                return 0
            flags = function.config_read(function.msix.offset + MSIX_FLAGS, 2)
            return (flags & MSIX_FLAGS_QSIZE) + 1
        if index == ERR:
            return 1 if self.is_pcie else 0
        if index == REQ:
            return 1
        return 0

    # ------------------------------------------------------------------ hooks for vconfig

    def msi_enabled(self) -> bool:
        """MSI is enabled through SET_IRQS (the virtual MSI Enable bit may show it)."""
        return self.irq_type == MSI

    def msix_enabled(self) -> bool:
        """MSI-X is enabled through SET_IRQS."""
        return self.irq_type == MSIX

    def config_intx_disable(self, disabled: bool) -> None:
        """The user wrote the *virtual* command register: its INTx Disable bit is ``disabled``
        (vfio_basic_config_write). Setting it masks INTx, clearing it unmasks (which fires at
        once if the line is still asserted); with INTx not in use the physical bit just
        follows the virtual one. Writes that do not change the bit do nothing."""
        with self.lock:
            if disabled and not self.virq_disabled:
                self.virq_disabled = True
                self._intx_mask()
            elif not disabled and self.virq_disabled:
                self.virq_disabled = False
                self._intx_unmask()

    # ------------------------------------------------------------------ GET_IRQ_INFO

    def get_irq_info(self, caller: Caller, arg: int) -> int:
        """vfio_pci_ioctl_get_irq_info: 16 bytes in, EINVAL for a short argsz, an index beyond
        REQ or ERR on a conventional PCI device; 16 bytes back (argsz and index echoed)."""
        raw = bytearray(copy_in(caller, arg, _INFO_MINSZ))
        fields = V.IRQ_INFO.unpack(raw)
        argsz, index = int_field(fields, "argsz"), int_field(fields, "index")
        if argsz < _INFO_MINSZ:
            raise KernelError(errno.EINVAL, f"VFIO_DEVICE_GET_IRQ_INFO: argsz {argsz} is below "
                                            f"{_INFO_MINSZ}")
        if index >= V.VFIO_PCI_NUM_IRQS:
            raise KernelError(errno.EINVAL, f"VFIO_DEVICE_GET_IRQ_INFO: no IRQ index {index}")
        if index == ERR and not self.is_pcie:
            raise KernelError(errno.EINVAL, "VFIO_DEVICE_GET_IRQ_INFO: no ERR interrupt on a "
                                            "conventional PCI device")
        flags = V.VFIO_IRQ_INFO_EVENTFD
        if index == INTX:
            flags |= V.VFIO_IRQ_INFO_MASKABLE | V.VFIO_IRQ_INFO_AUTOMASKED
        else:
            # MSI-X would drop NORESIZE with dynamic MSI-X allocation (has_dyn_msix), which
            # this emulation does not offer: vectors are allocated at enable time only.
            flags |= V.VFIO_IRQ_INFO_NORESIZE
        V.IRQ_INFO.write_fields(raw, flags=flags, count=self.irq_count(index))
        caller.memory.write(arg, bytes(raw))
        return 0

    # ------------------------------------------------------------------ SET_IRQS

    def set_irqs(self, caller: Caller, arg: int) -> int:
        """vfio_pci_ioctl_set_irqs: copy in the header, validate it against the index's count
        (vfio_set_irqs_validate_and_prepare), copy in the data, then run the action."""
        fields = V.IRQ_SET.unpack(copy_in(caller, arg, _SET_MINSZ))
        argsz, flags = int_field(fields, "argsz"), int_field(fields, "flags")
        index, start = int_field(fields, "index"), int_field(fields, "start")
        count = int_field(fields, "count")
        data_size = self._validate_and_prepare(argsz, flags, index, start, count,
                                               self.irq_count(index))
        data = copy_in(caller, arg + _SET_MINSZ, data_size) if data_size else b""
        with self.lock:
            return self._set_irqs_locked(caller, flags, index, start, count, data)

    @staticmethod
    def _validate_and_prepare(argsz: int, flags: int, index: int, start: int, count: int,
                              max_count: int) -> int:
        """vfio_set_irqs_validate_and_prepare: the header checks, in the kernel's order.
        Returns how many data bytes follow the header."""
        if argsz < _SET_MINSZ:
            raise _einval(f"argsz {argsz} is below {_SET_MINSZ}")
        if index >= V.VFIO_PCI_NUM_IRQS:
            raise _einval(f"no IRQ index {index}")
        if count >= _U32_MAX - start:
            raise _einval(f"start {start} + count {count} overflows")
        if flags & ~(V.VFIO_IRQ_SET_DATA_TYPE_MASK | V.VFIO_IRQ_SET_ACTION_TYPE_MASK):
            raise _einval(f"unknown flags {flags:#x}")
        if start >= max_count or start + count > max_count:
            raise _einval(f"start {start} count {count} do not fit the {max_count} "
                          f"interrupts of {_INDEX_NAMES[index]}")
        element = _DATA_ELEMENT_SIZE.get(flags & V.VFIO_IRQ_SET_DATA_TYPE_MASK)
        if element is None:
            raise _einval("the data type must be exactly one of NONE, BOOL, EVENTFD")
        if argsz - _SET_MINSZ < count * element:
            raise _einval(f"argsz {argsz} leaves no room for {count} data elements")
        return count * element

    def _set_irqs_locked(self, caller: Caller, flags: int, index: int, start: int, count: int,
                         data: bytes) -> int:
        """vfio_pci_set_irqs_ioctl: pick the handler for (index, action); ENOTTY when there is
        none (no action, several actions, MASK/UNMASK on anything but INTx, ERR off PCIe)."""
        action = flags & V.VFIO_IRQ_SET_ACTION_TYPE_MASK
        if index == INTX:
            if action == _ACTION_MASK:
                return self._set_intx_mask(start, count, flags, data)
            if action == _ACTION_UNMASK:
                return self._set_intx_unmask(caller, start, count, flags, data)
            if action == _ACTION_TRIGGER:
                return self._set_intx_trigger(caller, start, count, flags, data)
        elif index in (MSI, MSIX):
            if action == _ACTION_TRIGGER:
                return self._set_msi_trigger(caller, index, start, count, flags, data)
        elif index == ERR:
            if action == _ACTION_TRIGGER and self.is_pcie:
                return self._set_single_trigger(caller, self._err, start, count, flags, data)
        elif index == REQ:
            if action == _ACTION_TRIGGER:
                return self._set_single_trigger(caller, self._req, start, count, flags, data)
        raise KernelError(errno.ENOTTY, f"VFIO_DEVICE_SET_IRQS: action {action:#x} is not "
                                        f"supported on {_INDEX_NAMES[index]}")

    # ------------------------------------------------------------------ INTx: SET_IRQS

    def _set_intx_trigger(self, caller: Caller, start: int, count: int, flags: int,
                          data: bytes) -> int:
        """vfio_pci_set_intx_trigger: DATA_NONE with count 0 disables; EVENTFD enables INTx
        or swaps its trigger (a negative fd means no trigger; a bad fd changes nothing);
        NONE/BOOL signal the trigger (loopback; the mask does not apply)."""
        is_intx = self.irq_type == INTX
        if is_intx and not count and flags & _DATA_NONE:
            self._intx_disable()
            return 0
        if not (is_intx or self.irq_type == _NO_IRQ):
            raise _einval(f"{_INDEX_NAMES[self.irq_type]} is enabled, not INTx")
        if start != 0 or count != 1:
            raise _einval(f"INTx trigger needs start 0 count 1, not {start}/{count}")
        if flags & _DATA_EVENTFD:
            fd = _fd_at(data, 0)
            trigger = caller.eventfd(fd) if fd >= 0 else None
            if is_intx:
                self._intx_set_signal(trigger)
            else:
                self._intx_enable(trigger)
            return 0
        if not is_intx:
            raise _einval("INTx loopback needs INTx enabled")
        if flags & _DATA_NONE or data[0]:
            self._send_intx_eventfd()
        return 0

    def _set_intx_mask(self, start: int, count: int, flags: int, data: bytes) -> int:
        """vfio_pci_set_intx_mask: NONE or BOOL(true) masks; EVENTFD (an irqfd that masks) is
        not implemented by the kernel: ENOTTY, but only after the INTx-enabled check."""
        if self.irq_type != INTX or start != 0 or count != 1:
            raise _einval("INTx mask needs INTx enabled, start 0 and count 1")
        if flags & _DATA_EVENTFD:
            raise KernelError(errno.ENOTTY, "VFIO_DEVICE_SET_IRQS: INTx mask by eventfd is not "
                                            "implemented by vfio-pci")
        if flags & _DATA_NONE or data[0]:
            self._intx_mask()
        return 0

    def _set_intx_unmask(self, caller: Caller, start: int, count: int, flags: int,
                         data: bytes) -> int:
        """vfio_pci_set_intx_unmask: NONE or BOOL(true) unmasks; EVENTFD fd >= 0 registers an
        eventfd whose signals unmask (a virqfd; EBUSY if one is registered), fd < 0 removes
        it."""
        if self.irq_type != INTX or start != 0 or count != 1:
            raise _einval("INTx unmask needs INTx enabled, start 0 and count 1")
        if flags & _DATA_EVENTFD:
            fd = _fd_at(data, 0)
            if fd >= 0:
                self._unmask_irqfd_enable(caller, fd)
            else:
                self._unmask_irqfd_disable()
        elif flags & _DATA_NONE or data[0]:
            self._intx_unmask()
        return 0

    # ------------------------------------------------------------------ INTx: machinery

    def _ctx(self) -> _IntxContext:
        assert self._intx is not None, "INTx context used while INTx is not enabled"
        return self._intx

    def _intx_enable(self, trigger: EventSignal | None) -> None:
        """vfio_intx_enable: the mask starts as the virtual INTx Disable says (and the physical
        bit is set to match), then the handler is installed; a line that is already asserted
        then fires at once, being level-triggered."""
        ctx = _IntxContext(trigger, masked=self.virq_disabled)
        self._intx = ctx
        self._physical_intx_disable(ctx.masked)
        self.irq_type = INTX
        self._replay_intx_line()

    def _intx_set_signal(self, trigger: EventSignal | None) -> None:
        """vfio_intx_set_signal: swap the trigger; the old reference is dropped."""
        ctx = self._ctx()
        old, ctx.trigger = ctx.trigger, trigger
        if old is not None:
            old.close()

    def _intx_disable(self) -> None:
        """vfio_intx_disable: unmask irqfd, handler and trigger go; the physical Interrupt
        Disable bit stays as it is."""
        ctx = self._ctx()
        self._unmask_irqfd_disable()
        if ctx.trigger is not None:
            ctx.trigger.close()
            ctx.trigger = None
        self._intx = None
        self.irq_type = _NO_IRQ

    def _send_intx_eventfd(self) -> None:
        """vfio_send_intx_eventfd: signal the trigger, unless the user disabled INTx in the
        virtual command register."""
        if self.irq_type == INTX and not self.virq_disabled:
            trigger = self._ctx().trigger
            if trigger is not None:
                trigger.signal()

    def _intx_mask(self) -> bool:
        """__vfio_pci_intx_mask: set the physical Interrupt Disable bit and remember the mask.
        Without INTx in use the physical bit just follows. Returns whether the mask changed."""
        if self.irq_type != INTX:
            self._physical_intx_disable(True)
            return False
        ctx = self._ctx()
        if ctx.masked:
            return False
        self._physical_intx_disable(True)
        ctx.masked = True
        return True

    def _intx_unmask_handler(self) -> bool:
        """vfio_pci_intx_unmask_handler: unmask unless the line is still pending
        (pci_check_and_unmask_intx); a pending line stays masked and is reported again
        instead (returns True: the caller signals). Without INTx in use the physical bit just
        follows."""
        if self.irq_type != INTX:
            self._physical_intx_disable(False)
            return False
        ctx = self._ctx()
        if not ctx.masked or self.virq_disabled:
            return False
        resend = not self._check_and_unmask()
        ctx.masked = resend
        return resend

    def _intx_unmask(self) -> None:
        """__vfio_pci_intx_unmask."""
        if self._intx_unmask_handler():
            self._send_intx_eventfd()
        else:
            self._replay_intx_line()

    def _intx_handler(self) -> None:
        """vfio_intx_handler (the host's INTx handler, shared-line style): if not masked and
        the function says it is interrupting (Interrupt Status), mask it at the function and
        signal the user: one eventfd signal per assertion (AUTOMASKED)."""
        if self.irq_type != INTX:
            return            # no handler is registered while INTx is not enabled
        ctx = self._ctx()
        if ctx.masked or not self._check_and_mask():
            return
        ctx.masked = True
        self._send_intx_eventfd()

    def _replay_intx_line(self) -> None:
        """A level-triggered line that is asserted when the handler becomes able to take it
        (handler installed, line unmasked) interrupts at once."""
        if self.function.intx_asserted:
            self._intx_handler()

    # Physical config accesses the host PCI core makes (drivers/pci/pci.c).

    def _physical_intx_disable(self, disabled: bool) -> None:
        """pci_intx(pdev, !disabled): read-modify-write of the command register, only when
        the bit changes."""
        command = self.function.config_read(COMMAND, 2)
        wanted = (command | COMMAND_INTX_DISABLE) if disabled else (
            command & ~COMMAND_INTX_DISABLE)
        if wanted != command:
            self.function.config_write(COMMAND, 2, wanted)

    def _check_and_mask(self) -> bool:
        """pci_check_and_mask_intx: if the function's Interrupt Status is set, set Interrupt
        Disable and say yes; otherwise the interrupt is not this function's."""
        if not self.function.config_read(STATUS, 2) & STATUS_INTERRUPT:
            return False
        self._physical_intx_disable(True)
        return True

    def _check_and_unmask(self) -> bool:
        """pci_check_and_unmask_intx: clear Interrupt Disable unless an interrupt is pending
        (Interrupt Status set); returns whether it unmasked."""
        if self.function.config_read(STATUS, 2) & STATUS_INTERRUPT:
            return False
        self._physical_intx_disable(False)
        return True

    # ------------------------------------------------------------------ INTx: unmask irqfd

    def _unmask_irqfd_enable(self, caller: Caller, fd: int) -> None:
        """vfio_virqfd_enable: EBADF / EINVAL for a bad fd, then EBUSY if one is registered."""
        ctx = self._ctx()
        irqfd = caller.eventfd(fd)
        if ctx.unmask_irqfd is not None:
            irqfd.close()
            raise KernelError(errno.EBUSY, "VFIO_DEVICE_SET_IRQS: an INTx unmask eventfd is "
                                           "already registered")
        ctx.unmask_irqfd = irqfd

    def _unmask_irqfd_disable(self) -> None:
        """vfio_virqfd_disable: drop the unmask eventfd, if any."""
        ctx = self._ctx()
        if ctx.unmask_irqfd is not None:
            ctx.unmask_irqfd.close()
            ctx.unmask_irqfd = None

    @property
    def unmask_irqfd(self) -> EventSignal | None:
        """The eventfd registered with EVENTFD|UNMASK on INTx (None: none). Whoever can watch
        it (the engine itself never does I/O) calls :meth:`unmask_irqfd_signalled` when it
        becomes readable, after consuming its counter as the kernel's virqfd_wakeup does."""
        with self.lock:
            return self._intx.unmask_irqfd if self._intx is not None else None

    def unmask_irqfd_signalled(self) -> None:
        """The unmask eventfd was signalled: unmask INTx (and report a still pending line
        through the trigger), as the virqfd's handler and thread do."""
        with self.lock:
            if self.irq_type == INTX and self._ctx().unmask_irqfd is not None:
                self._intx_unmask()

    # ------------------------------------------------------------------ MSI / MSI-X

    def _set_msi_trigger(self, caller: Caller, index: int, start: int, count: int, flags: int,
                         data: bytes) -> int:
        """vfio_pci_set_msi_trigger: NONE with count 0 disables; EVENTFD attaches/detaches
        vectors, enabling the index with ``start + count`` vectors first if needed (and
        disabling it again if that call fails); NONE/BOOL signal the selected vectors that
        have an eventfd (loopback)."""
        msix = index == MSIX
        active = self.irq_type == index
        if active and not count and flags & _DATA_NONE:
            self._msi_disable(msix)
            return 0
        if not (active or self.irq_type == _NO_IRQ):
            raise _einval(f"{_INDEX_NAMES[self.irq_type]} is enabled, not "
                          f"{_INDEX_NAMES[index]}")
        if flags & _DATA_EVENTFD:
            fds = [_fd_at(data, i) for i in range(count)]
            if active:
                self._msi_set_block(caller, start, fds)
                return 0
            self._msi_enable(start + count, msix)
            try:
                self._msi_set_block(caller, start, fds)
            except KernelError:
                self._msi_disable(msix)
                raise
            return 0
        if not active:
            raise _einval(f"{_INDEX_NAMES[index]} loopback needs {_INDEX_NAMES[index]} enabled")
        for vector in range(start, start + count):
            trigger = self._vectors.get(vector)
            if trigger is None:
                continue
            if flags & _DATA_NONE or data[vector - start]:
                trigger.signal()
        return 0

    def _msi_enable(self, vectors: int, msix: bool) -> None:
        """vfio_msi_enable: pci_alloc_irq_vectors(1, vectors) on the function. Asking for no
        vector at all fails there with ERANGE (max below min), which the kernel returns."""
        if vectors < 1:
            raise KernelError(errno.ERANGE, "VFIO_DEVICE_SET_IRQS: enabling "
                                            f"{'MSI-X' if msix else 'MSI'} with no vector")
        # The kernel wraps the allocation in vfio_pci_memory_lock_and_enable/_unlock_and_restore,
        # which writes the command register back as it was before: pci_intx_for_msi's
        # Interrupt Disable does not survive, so the allocation leaves the command register
        # unchanged, as host_enable_msi/msix do.
        if msix:
            self.function.host_enable_msix(vectors)
        else:
            self.function.host_enable_msi(vectors)
            if self.on_msi_vectors is not None:
                self.on_msi_vectors(vectors)
        self._vectors_allocated = vectors
        self.irq_type = MSIX if msix else MSI

    def _msi_set_block(self, caller: Caller, start: int, fds: list[int]) -> None:
        """vfio_msi_set_block: set vector by vector; on a failure every vector this call
        reached (the failing one included) is detached and the error returned."""
        for offset, fd in enumerate(fds):
            try:
                self._msi_set_vector_signal(caller, start + offset, fd)
            except KernelError:
                for vector in range(start, start + offset + 1):
                    self._msi_set_vector_signal(caller, vector, -1)
                raise

    def _msi_set_vector_signal(self, caller: Caller, vector: int, fd: int) -> None:
        """vfio_msi_set_vector_signal: detach the vector's eventfd, then attach ``fd`` unless
        it is negative. A vector the enable did not allocate has no host interrupt
        (pci_irq_vector: EINVAL), checked before the fd."""
        old = self._vectors.pop(vector, None)
        if old is not None:
            old.close()
        if fd < 0:
            return
        if old is None and vector >= self._vectors_allocated:
            raise _einval(f"vector {vector} was not allocated ({self._vectors_allocated} were)")
        self._vectors[vector] = caller.eventfd(fd)

    def _msi_disable(self, msix: bool) -> None:
        """vfio_msi_disable: every vector's eventfd dropped, the host vectors freed."""
        for vector in sorted(self._vectors):
            self._vectors.pop(vector).close()
        if msix:      # (the command register ends unchanged here too: see _msi_enable)
            self.function.host_disable_msix()
        else:
            self.function.host_disable_msi()
        self._vectors_allocated = 0
        self.irq_type = _NO_IRQ

    # ------------------------------------------------------------------ ERR / REQ

    @staticmethod
    def _set_single_trigger(caller: Caller, slot: _TriggerSlot, start: int, count: int,
                            flags: int, data: bytes) -> int:
        """vfio_pci_set_err_trigger / _req_trigger + vfio_pci_set_ctx_trigger_single.

        NONE needs a registered eventfd (count 1 signals it, count 0 unregisters it);
        BOOL and EVENTFD need count 1; fd -1 unregisters, fd >= 0 replaces, and any other
        negative fd is accepted and changes nothing (the kernel, not vfio-legacy.md §2.4)."""
        if start != 0 or count > 1:
            raise _einval(f"a single-eventfd index needs start 0 and count 0 or 1, not "
                          f"{start}/{count}")
        if flags & _DATA_NONE:
            if slot.trigger is None:
                raise _einval("no eventfd is registered")
            if count:
                slot.trigger.signal()
            else:
                slot.drop()
            return 0
        if not count:
            raise _einval("BOOL and EVENTFD need count 1")
        if flags & _DATA_BOOL:
            if data[0] and slot.trigger is not None:
                slot.trigger.signal()
            return 0
        fd = _fd_at(data, 0)
        if fd == -1:
            slot.drop()
        elif fd >= 0:
            new = caller.eventfd(fd)
            slot.drop()
            slot.trigger = new
        return 0

    def signal_error(self) -> bool:
        """An uncorrectable error was detected (vfio_pci_core_aer_err_detected): signal the
        ERR eventfd. Returns whether one was registered."""
        with self.lock:
            if self._err.trigger is None:
                return False
            self._err.trigger.signal()
            return True

    def signal_request(self) -> bool:
        """The host wants the device back (vfio_pci_core_request, e.g. an unbind): signal the
        REQ eventfd. Returns whether one was registered."""
        with self.lock:
            if self._req.trigger is None:
                return False
            self._req.trigger.signal()
            return True

    # ------------------------------------------------------------------ the sink side

    def intx(self, asserted: bool) -> None:
        """The function's INTx line changed level. Only an assertion interrupts; the
        deassertion that masking itself causes is expected and ignored."""
        if asserted:
            with self.lock:
                self._intx_handler()

    def msi(self, vector: int) -> None:
        """An MSI message: signal the vector's eventfd (vfio_msihandler), if it has one."""
        self._message(MSI, vector)

    def msix(self, vector: int) -> None:
        """An MSI-X message: signal the vector's eventfd, if it has one."""
        self._message(MSIX, vector)

    def _message(self, kind: int, vector: int) -> None:
        with self.lock:
            if self.irq_type == kind:
                trigger = self._vectors.get(vector)
                if trigger is not None:
                    trigger.signal()

    # ------------------------------------------------------------------ teardown

    def release(self) -> None:
        """The interrupt part of vfio_pci_core_disable and vfio_pci_core_close_device: the
        active index torn down (its eventfds dropped, host vectors freed), the virtual INTx
        Disable forgotten, ERR and REQ eventfds dropped; interrupts stop reaching us."""
        with self.lock:
            if self.irq_type == INTX:
                self._intx_disable()
            elif self.irq_type in (MSI, MSIX):
                self._msi_disable(self.irq_type == MSIX)
            self.virq_disabled = False
            self._err.drop()
            self._req.drop()
            if self.function.sink is self:
                self.function.attach(None)
