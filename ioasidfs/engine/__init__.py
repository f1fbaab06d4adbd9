"""The kernel object model: containers, groups, devices, iommufd contexts and their files."""
from .caller import FOREIGN, Caller, ClientMemory, EventSignal, FakeEventfd, FakeMemory
from .engine import Engine
from .files import FileKind, OpenFile

__all__ = ["Caller", "ClientMemory", "Engine", "EventSignal", "FakeEventfd", "FOREIGN", "FakeMemory", "FileKind", "OpenFile"]
