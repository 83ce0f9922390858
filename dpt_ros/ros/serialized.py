# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Publish serialized CDR from a buffer each publisher keeps, read in place by rcl.

rclpy's Publisher.publish(bytes) copies the bytes into a C++ string before rcl hands them to
the middleware, which copies them again into its own sample: two copies of a 6-18 MB frame
after the one that made the bytes. SerializedPublisher copies a message once, into a buffer it
keeps (reused frame after frame, so its pages stay mapped), and passes that buffer to
rcl_publish_serialized_message (rcl's C API, the function rclpy's publish(bytes) calls, stable
since Dashing) as an rcl_serialized_message_t that points at it. The middleware copies the
sample before the call returns (rmw's contract for serialized publication), so the buffer is
free again after send().

Where rcl's library or the publisher's handle cannot be reached through ctypes (a platform
without /proc, an rclpy without Publisher.handle.pointer), it falls back to publish(bytes),
the same message. The fallback is logged once per process by whoever asks `zero_copy_reason`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from typing import Any, Optional, Tuple

from dpt_ros.core.cdr import Serialized


class _Allocator(ctypes.Structure):
    # rcutils_allocator_t: allocate, deallocate, reallocate, zero_allocate, state
    _fields_ = [('allocate', ctypes.c_void_p), ('deallocate', ctypes.c_void_p),
                ('reallocate', ctypes.c_void_p), ('zero_allocate', ctypes.c_void_p),
                ('state', ctypes.c_void_p)]


class _Uint8Array(ctypes.Structure):
    # rcutils_uint8_array_t, which rcl_serialized_message_t (rmw_serialized_message_t) is
    _fields_ = [('buffer', ctypes.c_void_p), ('buffer_length', ctypes.c_size_t),
                ('buffer_capacity', ctypes.c_size_t), ('allocator', _Allocator)]


class _ErrorString(ctypes.Structure):
    _fields_ = [('str', ctypes.c_char * 1024)]  # rcutils_error_string_t


_lock = threading.Lock()
_api: Optional[Tuple[Any, Any, Any]] = None
_reason: Optional[str] = None


def _loaded(name: str) -> Optional[str]:
    """Path of the shared library `name` this process already has mapped (Linux), or None."""
    try:
        with open('/proc/self/maps') as maps:
            for line in maps:
                path = line.rstrip().rpartition(' ')[2]
                if path.endswith('/' + name):
                    return path
    except OSError:
        pass
    return None


def _library(stem: str) -> ctypes.CDLL:
    name = f'lib{stem}.so'
    path = _loaded(name) or ctypes.util.find_library(stem) or name
    return ctypes.CDLL(path)


def _load() -> Optional[Tuple[Any, Any, Any]]:
    """rcl_publish_serialized_message and rcutils' error calls, or None with _reason set."""
    global _api, _reason
    with _lock:
        if _api is not None or _reason is not None:
            return _api
        try:
            import rclpy  # noqa: F401 - maps librcl and librcutils into the process
            rcl, rcutils = _library('rcl'), _library('rcutils')
            publish = rcl.rcl_publish_serialized_message
            publish.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Uint8Array), ctypes.c_void_p]
            publish.restype = ctypes.c_int
            error = rcutils.rcutils_get_error_string
            error.argtypes, error.restype = [], _ErrorString
            reset = rcutils.rcutils_reset_error
            reset.argtypes, reset.restype = [], None
            _api = (publish, error, reset)
        except (ImportError, OSError, AttributeError) as exc:
            _reason = f'rcl not reachable through ctypes ({exc})'
        return _api


def zero_copy_reason() -> Optional[str]:
    """None when SerializedPublisher publishes in place, else why it publishes bytes."""
    _load()
    return _reason


class SerializedPublisher:
    """Publish Serialized messages on one rclpy publisher, copied once into a kept buffer.

    write(msg) copies the message into the buffer (the fill); send() publishes it. One thread
    at a time (a lock keeps a second writer waiting); publish(msg) does both.
    """

    def __init__(self, publisher: Any) -> None:
        self.publisher = publisher
        self._lock = threading.Lock()
        self._buffer: Optional[bytearray] = None
        self._view: Any = None
        self._address = 0
        self._message = _Uint8Array()
        self._bytes: Optional[bytes] = None  # the fallback's message
        api = _load()
        pointer = getattr(getattr(publisher, 'handle', None), 'pointer', None)
        self.in_place = api is not None and isinstance(pointer, int)

    def write(self, msg: Serialized) -> None:
        with self._lock:
            if not self.in_place:
                self._bytes = msg.tobytes()
                return
            if self._buffer is None or len(self._buffer) < msg.nbytes:
                self._buffer = bytearray(msg.nbytes)
                # The ctypes view pins the buffer (a bytearray with a view cannot be resized).
                self._view = (ctypes.c_char * len(self._buffer)).from_buffer(self._buffer)
                self._address = ctypes.addressof(self._view)
            msg.write_into(self._buffer)
            self._message.buffer = self._address
            self._message.buffer_length = msg.nbytes
            self._message.buffer_capacity = len(self._buffer)

    def send(self) -> None:
        with self._lock:
            if not self.in_place:
                data, self._bytes = self._bytes, None
                if data is not None:
                    self.publisher.publish(data)
                return
            if not self._message.buffer_length:
                return
            publish, error, reset = _api  # type: ignore[misc]
            handle = self.publisher.handle
            with handle:  # as rclpy's publish: the publisher is not destroyed meanwhile
                ret = publish(handle.pointer, ctypes.byref(self._message), None)
            self._message.buffer_length = 0
            if ret != 0:
                text = error().str.decode('utf-8', 'replace')
                reset()
                raise RuntimeError(f'rcl_publish_serialized_message failed ({ret}): {text}')

    def publish(self, msg: Serialized) -> None:
        self.write(msg)
        self.send()
