"""estate from Python, through libestate's C ABI (ctypes, no build step).

Two interfaces, as in the C library:

* ``estate``: the prototype's Python class (``estate(instance_id, ip, base_port)``, with
  ``set``/``get``/``delete``/``get_global``), on the prototype's API (estatepp.h). One
  per process. ``get`` answers ``None`` for a missing key.
* ``Node``: the explicit API (estate.h): any number of nodes per process, errors raised
  as ``EstateError``.

The library is ``$ESTATE_LIBRARY`` if set, else ``libestate.so`` from this checkout's
``target/release`` or ``target/debug`` (``cargo build --release -p estate-c``), else the
system's library path.
"""

import ctypes
import ctypes.util
import os

__all__ = ["EstateError", "Node", "StateItem", "estate", "load_library"]


class _StateItemC(ctypes.Structure):
    _fields_ = [("timestamp", ctypes.c_ulong), ("node_identifier", ctypes.c_char_p), ("data", ctypes.c_char_p)]


class _ItemC(ctypes.Structure):
    _fields_ = [("key", ctypes.c_char_p), ("value", ctypes.c_char_p), ("origin", ctypes.c_char_p),
                ("version", ctypes.c_uint64)]


class _Config(ctypes.Structure):
    _fields_ = [("id", ctypes.c_char_p), ("listen", ctypes.c_char_p), ("join", ctypes.POINTER(ctypes.c_char_p)),
                ("join_len", ctypes.c_size_t), ("control", ctypes.c_char_p), ("heartbeat_ms", ctypes.c_uint32)]


class _ReadOptions(ctypes.Structure):
    _fields_ = [("timeout_ms", ctypes.c_uint32), ("remote", ctypes.c_int32), ("all", ctypes.c_int32)]


class _ReadInfo(ctypes.Structure):
    _fields_ = [("answered", ctypes.c_size_t), ("missing", ctypes.c_size_t)]


class StateItem:
    """One item a reduce function sees: its value as text, where it is, its version."""

    def __init__(self, timestamp, node_identifier, data):
        self.timestamp = timestamp
        self.node_identifier = node_identifier
        self.data = data

    def __repr__(self):
        return "StateItem(%r from %s @%d)" % (self.data, self.node_identifier, self.timestamp)


_PROTOTYPE_REDUCE = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.POINTER(_StateItemC), ctypes.c_int)
_REDUCE = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.POINTER(_ItemC), ctypes.c_size_t, ctypes.c_void_p)
_NODE_P = ctypes.c_void_p
_lib = None


def load_library(path=None):
    """Loads libestate once; later calls return the same library."""
    global _lib
    if _lib is not None:
        return _lib
    candidates = [path, os.environ.get("ESTATE_LIBRARY")]
    here = os.path.dirname(os.path.abspath(__file__))
    for profile in ("release", "debug"):
        candidates.append(os.path.join(here, "..", "target", profile, "libestate.so"))
    candidates.append(ctypes.util.find_library("estate"))
    found = next((c for c in candidates if c and (os.path.exists(c) or not os.path.sep in c)), None)
    if found is None:
        raise OSError("libestate.so not found: build it with `cargo build --release -p estate-c` "
                      "or set ESTATE_LIBRARY")
    lib = ctypes.CDLL(found)
    s, i32, sz = ctypes.c_char_p, ctypes.c_int, ctypes.c_size_t
    signatures = {
        "es_init": (None, [s, i32]),
        "es_init_with_peers": (None, [s, i32, s]),
        "es_close": (None, []),
        "es_set": (None, [s, s]),
        "es_get": (s, [s]),
        "es_del": (None, [s]),
        "es_get_global": (s, [s, _PROTOTYPE_REDUCE]),
        "es_get_global_predefined_reduce": (s, [s, i32]),
        "estate_last_error": (s, []),
        "estate_status_name": (s, [i32]),
        "estate_free_string": (None, [ctypes.c_void_p]),
        "estate_node_start": (i32, [ctypes.POINTER(_Config), ctypes.POINTER(_NODE_P)]),
        "estate_node_stop": (None, [_NODE_P]),
        "estate_node_leave": (i32, [_NODE_P, ctypes.c_uint32]),
        "estate_node_endpoint": (s, [_NODE_P]),
        "estate_node_wait_members": (i32, [_NODE_P, sz, ctypes.c_uint32]),
        "estate_set": (i32, [_NODE_P, s, s]),
        "estate_get": (i32, [_NODE_P, s, ctypes.POINTER(ctypes.c_void_p)]),
        "estate_del": (i32, [_NODE_P, s, ctypes.POINTER(ctypes.c_int)]),
        "estate_add": (i32, [_NODE_P, s, ctypes.c_int64, ctypes.POINTER(ctypes.c_int64)]),
        "estate_get_global": (i32, [_NODE_P, s, s, ctypes.POINTER(_ReadOptions), ctypes.POINTER(ctypes.c_void_p),
                                    ctypes.POINTER(_ReadInfo)]),
        "estate_get_global_with": (i32, [_NODE_P, s, ctypes.POINTER(_ReadOptions), _REDUCE, ctypes.c_void_p,
                                         ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(_ReadInfo)]),
    }
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    _lib = lib
    return lib


def _text(b):
    return None if b is None else b.decode("utf-8", "replace")


def _answer_of(reduce, to_items):
    """Wraps a Python reduce function for C: the answer's buffer stays alive in `keep`
    until the C call returns (estate copies it)."""
    keep = []

    def call(*args):
        answer = reduce(to_items(*args))
        if answer is None:
            return None
        buffer = ctypes.create_string_buffer(str(answer).encode())
        keep.append(buffer)
        return ctypes.addressof(buffer)

    return call, keep


class EstateError(Exception):
    """A failed call of the explicit API: the status code's name and estate's message."""

    def __init__(self, status, message):
        self.status = status
        self.message = message
        super().__init__("%s: %s" % (status, message))


class estate(object):
    """The prototype's class: this process's node at ip:(base_port + instance_id)."""

    def __init__(self, instance_id, ip="127.0.0.1", base_port=9000, peers=None, library=None):
        self.lib = load_library(library)
        self.instance_id = int(instance_id)
        self.ip = str(ip)
        self.port = int(base_port) + self.instance_id
        if peers:
            peer_list = peers if isinstance(peers, str) else ";".join(peers)
            self.lib.es_init_with_peers(self.ip.encode(), self.port, peer_list.encode())
        else:
            self.lib.es_init(self.ip.encode(), self.port)

    def close(self):
        self.lib.es_close()

    def set(self, k, s):
        self.lib.es_set(str(k).encode(), str(s).encode())
        return True

    def get(self, k):
        value = _text(self.lib.es_get(str(k).encode()))
        return None if value == "ES_NONE" else value

    def delete(self, k):
        self.lib.es_del(str(k).encode())
        return True

    def get_global(self, k, red_func):
        """red_func gets a list of StateItem and returns a string (or None)."""
        def items(ptr, n):
            return [StateItem(ptr[i].timestamp, _text(ptr[i].node_identifier), _text(ptr[i].data)) for i in range(n)]
        call, _keep = _answer_of(red_func, items)
        value = _text(self.lib.es_get_global(str(k).encode(), _PROTOTYPE_REDUCE(call)))
        return None if value == "ES_NONE" else value

    def get_global_predefined(self, k, reduce_id):
        """0 latest, 1 sum, 2 avg, 3 min, 4 max, 5 count."""
        value = _text(self.lib.es_get_global_predefined_reduce(str(k).encode(), int(reduce_id)))
        return None if value == "ES_NONE" else value

    @staticmethod
    def last_error():
        return _text(load_library().estate_last_error())


class Node(object):
    """A node of the explicit API; stop() or leave() ends it."""

    def __init__(self, node_id, listen="tcp://127.0.0.1:*", join=(), library=None):
        self.lib = load_library(library)
        seeds = [j.encode() for j in join]
        array = (ctypes.c_char_p * max(1, len(seeds)))(*seeds)
        config = _Config(node_id.encode(), listen.encode(), array, len(seeds), None, 0)
        handle = _NODE_P()
        self._check(self.lib.estate_node_start(ctypes.byref(config), ctypes.byref(handle)))
        self.handle = handle

    def _check(self, status):
        if status != 0:
            raise EstateError(_text(self.lib.estate_status_name(status)), _text(self.lib.estate_last_error()))

    def _take_string(self, ptr):
        try:
            return ctypes.string_at(ptr.value).decode("utf-8", "replace")
        finally:
            self.lib.estate_free_string(ptr)

    @property
    def endpoint(self):
        return _text(self.lib.estate_node_endpoint(self.handle))

    def wait_members(self, n, timeout_ms=10000):
        self._check(self.lib.estate_node_wait_members(self.handle, n, timeout_ms))

    def set(self, key, value):
        self._check(self.lib.estate_set(self.handle, key.encode(), str(value).encode()))

    def get(self, key):
        """The value as text, or None."""
        out = ctypes.c_void_p()
        status = self.lib.estate_get(self.handle, key.encode(), ctypes.byref(out))
        if status == 3:
            return None
        self._check(status)
        return self._take_string(out)

    def delete(self, key):
        deleted = ctypes.c_int()
        self._check(self.lib.estate_del(self.handle, key.encode(), ctypes.byref(deleted)))
        return bool(deleted.value)

    def add(self, key, delta):
        value = ctypes.c_int64()
        self._check(self.lib.estate_add(self.handle, key.encode(), int(delta), ctypes.byref(value)))
        return value.value

    def get_global(self, pattern, reducer, timeout_ms=0, remote=False, all=False):
        """(answer as text or None, members answered, members missing)."""
        options = _ReadOptions(timeout_ms, int(remote), int(all))
        out, info = ctypes.c_void_p(), _ReadInfo()
        status = self.lib.estate_get_global(self.handle, pattern.encode(), reducer.encode(), ctypes.byref(options),
                                            ctypes.byref(out), ctypes.byref(info))
        if status == 3:
            return None, info.answered, info.missing
        self._check(status)
        return self._take_string(out), info.answered, info.missing

    def get_global_with(self, pattern, reduce):
        """reduce gets a list of (key, value, origin, version) and returns a string."""
        def items(ptr, n, _user):
            return [(_text(ptr[i].key), _text(ptr[i].value), _text(ptr[i].origin), ptr[i].version) for i in range(n)]
        call, _keep = _answer_of(reduce, items)
        out, info = ctypes.c_void_p(), _ReadInfo()
        status = self.lib.estate_get_global_with(self.handle, pattern.encode(), None, _REDUCE(call), None,
                                                 ctypes.byref(out), ctypes.byref(info))
        if status == 3:
            return None
        self._check(status)
        return self._take_string(out)

    def leave(self, timeout_ms=10000):
        self._check(self.lib.estate_node_leave(self.handle, timeout_ms))
        self.handle = None

    def stop(self):
        if self.handle is not None:
            self.lib.estate_node_stop(self.handle)
            self.handle = None
