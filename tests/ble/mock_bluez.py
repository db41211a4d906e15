#!/usr/bin/env python3
"""Mock BlueZ on a private D-Bus daemon, driven over stdin/stdout.

Run with the venv python printed by scripts/install-ble-mock.sh (it needs
python-dbusmock from PyPI and Debian's dbus-python / gi via system site-packages).

Protocol (stdout carries only protocol lines; diagnostics go to stderr):
  startup:  one line  "READY <bus address>"  -> export it as DBUS_SYSTEM_BUS_ADDRESS
  then JSON-lines commands on stdin, each answered with "OK" or "ERR <message>":
    {"cmd":"add_device","mac":"AA:BB:CC:DD:EE:01","name":"tag1"}
    {"cmd":"advertise","mac":"...","rssi":-55,"manufacturer_data":{"76":"0215..."}}
    {"cmd":"advertise","mac":"...","rssi":-60,
         "service_data":{"0000feaa-0000-1000-8000-00805f9b34fb":"10f6..."}}
    {"cmd":"remove_device","mac":"..."}
    {"cmd":"set_powered","powered":false}          (adapter hci0's Powered property)
    {"cmd":"ping"}
  "advertise" needs at least one of rssi / manufacturer_data / service_data; all
  given fields go out in ONE org.freedesktop.DBus.Properties.PropertiesChanged
  signal on the device (like one BlueZ advertising report).
  manufacturer_data keys are company ids in decimal (or "0x004c"), values hex bytes.
  Stdin EOF, SIGTERM, SIGINT or SIGHUP: stop the mock and the bus, remove temp files,
  exit 0.

  --no-adapter: org.bluez is on the bus but has no adapter (add_device etc. fail).
  --selftest: start everything, run a few commands, check the mock's state over
  D-Bus and watch the PropertiesChanged signal, then clean up; exit 0 on success.
"""

import atexit
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import dbus
import dbus.bus

ADAPTER = "hci0"
ADAPTER_PATH = "/org/bluez/" + ADAPTER
BLUEZ = "org.bluez"
MOCK_IFACE = "org.bluez.Mock"
DBUSMOCK_IFACE = "org.freedesktop.DBus.Mock"
DEVICE_IFACE = "org.bluez.Device1"
ADAPTER_IFACE = "org.bluez.Adapter1"
PROPS_IFACE = "org.freedesktop.DBus.Properties"
START_TIMEOUT = 20.0
# TASTESYNC_BLE_MOCK_VERBOSE=1: let dbusmock log every call/signal and dbus-daemon
# its warnings to stderr (default: quiet, dbus-daemon's output is kept in a file
# that is shown if it fails to start).
VERBOSE = os.environ.get("TASTESYNC_BLE_MOCK_VERBOSE", "") not in ("", "0")

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""


def log(msg):
    print(f"mock_bluez: {msg}", file=sys.stderr, flush=True)


def _die_with_parent():
    """preexec_fn: SIGKILL the child if this driver dies (even by SIGKILL)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Harness:
    def __init__(self, with_adapter=True):
        self.with_adapter = with_adapter
        self.tmpdir = None
        self.daemon = None
        self.mock = None
        self.bus = None
        self.address = None
        self._cleaned = False

    # ---- lifecycle ---------------------------------------------------------
    def start(self):
        self.tmpdir = tempfile.mkdtemp(prefix="tastesync-ble-")
        socket = os.path.join(self.tmpdir, "system_bus_socket")
        conf = os.path.join(self.tmpdir, "bus.conf")
        with open(conf, "w") as f:
            f.write(BUS_CONFIG.format(socket=socket))

        daemon_bin = shutil.which("dbus-daemon") or "/usr/bin/dbus-daemon"
        daemon_log_path = os.path.join(self.tmpdir, "dbus-daemon.log")
        with open(daemon_log_path, "w") as daemon_log:
            self.daemon = subprocess.Popen(
                [daemon_bin, "--config-file=" + conf, "--nofork", "--nopidfile", "--print-address=1"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=sys.stderr if VERBOSE else daemon_log,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        line = self.daemon.stdout.readline().decode().strip()
        if not line:
            self.daemon.wait(timeout=5)
            with open(daemon_log_path) as f:
                err = f.read().strip()
            raise RuntimeError(f"dbus-daemon exited (rc={self.daemon.returncode}) without an address: {err}")
        self.address = line

        env = dict(os.environ)
        env["DBUS_SYSTEM_BUS_ADDRESS"] = self.address
        env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        env["PYTHONUNBUFFERED"] = "1"
        self.mock = subprocess.Popen(
            [sys.executable, "-m", "dbusmock", "--system", "--template", "bluez5"],
            stdin=subprocess.DEVNULL,
            # stdout is the protocol channel: keep it clean. dbusmock logs calls to stdout.
            stdout=sys.stderr if VERBOSE else subprocess.DEVNULL,
            stderr=sys.stderr,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

        self.bus = dbus.bus.BusConnection(self.address)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.bus.name_has_owner(BLUEZ):
            if self.mock.poll() is not None:
                raise RuntimeError(f"dbusmock exited early (rc={self.mock.returncode})")
            if time.monotonic() > deadline:
                raise RuntimeError("timed out waiting for org.bluez on the private bus")
            time.sleep(0.05)

        if self.with_adapter:
            self._mock_iface().AddAdapter(ADAPTER, "tastesync-test")
            # AddAdapter creates it Powered=true already; set it explicitly anyway.
            self._set_prop(ADAPTER_PATH, ADAPTER_IFACE, "Powered", dbus.Boolean(True))

    def cleanup(self):
        if self._cleaned:
            return
        self._cleaned = True
        if self.bus is not None:
            try:
                self.bus.close()
            except Exception:  # noqa: BLE001
                pass
        for proc in (self.mock, self.daemon):
            if proc is None or proc.poll() is not None:
                continue
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for proc in (self.mock, self.daemon):
            if proc is None:
                continue
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    # ---- D-Bus helpers -----------------------------------------------------
    def _mock_iface(self):
        return dbus.Interface(self.bus.get_object(BLUEZ, "/"), MOCK_IFACE)

    def _set_prop(self, path, iface, name, value):
        obj = self.bus.get_object(BLUEZ, path)
        dbus.Interface(obj, DBUSMOCK_IFACE).UpdateProperties(
            iface, dbus.Dictionary({name: value}, signature="sv")
        )

    @staticmethod
    def device_path(mac):
        return f"{ADAPTER_PATH}/dev_{mac.upper().replace(':', '_')}"

    def _require_device(self, mac):
        path = self.device_path(mac)
        obj = self.bus.get_object(BLUEZ, path)
        try:
            dbus.Interface(obj, PROPS_IFACE).Get(DEVICE_IFACE, "Address")
        except dbus.exceptions.DBusException as e:
            raise ValueError(f"no such device {mac} (add_device first)") from e
        return obj

    # ---- commands ----------------------------------------------------------
    def handle(self, req):
        cmd = req.get("cmd")
        if cmd == "ping":
            return
        if cmd == "add_device":
            mac = _mac(req)
            self._mock_iface().AddDevice(ADAPTER, mac, str(req.get("name", mac)))
            return
        if cmd == "remove_device":
            mac = _mac(req)
            self._require_device(mac)
            adapter = self.bus.get_object(BLUEZ, ADAPTER_PATH)
            dbus.Interface(adapter, ADAPTER_IFACE).RemoveDevice(dbus.ObjectPath(self.device_path(mac)))
            return
        if cmd == "set_powered":
            self._set_prop(ADAPTER_PATH, ADAPTER_IFACE, "Powered", dbus.Boolean(bool(req["powered"])))
            return
        if cmd == "advertise":
            mac = _mac(req)
            props = dbus.Dictionary({}, signature="sv")
            if req.get("rssi") is not None:
                props["RSSI"] = dbus.Int16(int(req["rssi"]))
            if req.get("manufacturer_data") is not None:
                md = dbus.Dictionary({}, signature="qv")
                for k, v in req["manufacturer_data"].items():
                    cid = int(k, 0) if isinstance(k, str) and k.lower().startswith("0x") else int(k)
                    if not 0 <= cid <= 0xFFFF:
                        raise ValueError(f"company id out of range: {k}")
                    md[dbus.UInt16(cid)] = _bytes(v)
                props["ManufacturerData"] = md
            if req.get("service_data") is not None:
                sd = dbus.Dictionary({}, signature="sv")
                for k, v in req["service_data"].items():
                    sd[dbus.String(_uuid128(k))] = _bytes(v)
                props["ServiceData"] = sd
            if not props:
                raise ValueError("advertise needs rssi, manufacturer_data or service_data")
            obj = self._require_device(mac)
            dbus.Interface(obj, DBUSMOCK_IFACE).UpdateProperties(DEVICE_IFACE, props)
            return
        raise ValueError(f"unknown cmd {cmd!r}")

    def serve(self):
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                req = json.loads(line)
                if not isinstance(req, dict):
                    raise ValueError("command must be a JSON object")
                self.handle(req)
                reply = "OK"
            except dbus.exceptions.DBusException as e:
                reply = f"ERR {e.get_dbus_name()}: {e.get_dbus_message()}"
            except (ValueError, KeyError, TypeError) as e:
                reply = f"ERR {type(e).__name__}: {e}"
            for proc, what in ((self.daemon, "dbus-daemon"), (self.mock, "dbusmock")):
                if proc.poll() is not None:
                    reply = f"ERR {what} died (rc={proc.returncode})"
            print(reply.replace("\n", " "), flush=True)


def _mac(req):
    mac = str(req["mac"]).upper()
    parts = mac.split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789ABCDEF" for c in p) for p in parts):
        raise ValueError(f"bad mac {req['mac']!r}")
    return mac


def _bytes(hexstr):
    data = bytes.fromhex(str(hexstr).replace(" ", "").replace(":", ""))
    # variant holding "ay"
    return dbus.Array([dbus.Byte(b) for b in data], signature="y")


def _uuid128(u):
    u = str(u).lower()
    if len(u) == 4:  # 16-bit short form, e.g. "feaa"
        return f"0000{u}-0000-1000-8000-00805f9b34fb"
    if len(u) != 36:
        raise ValueError(f"bad service uuid {u!r}")
    return u


def selftest(h):
    from dbus.mainloop.glib import DBusGMainLoop
    from gi.repository import GLib

    DBusGMainLoop(set_as_default=True)
    watch = dbus.bus.BusConnection(h.address)
    seen = []
    watch.add_signal_receiver(
        lambda iface, changed, _inv, path=None: seen.append((path, iface, dict(changed))),
        signal_name="PropertiesChanged",
        dbus_interface=PROPS_IFACE,
        path_keyword="path",
    )
    mac = "AA:BB:CC:DD:EE:01"
    h.handle({"cmd": "add_device", "mac": mac, "name": "tag1"})
    h.handle({"cmd": "advertise", "mac": mac, "rssi": -55, "manufacturer_data": {"76": "0215aabb"}})
    h.handle({"cmd": "advertise", "mac": mac, "rssi": -60,
              "service_data": {"0000feaa-0000-1000-8000-00805f9b34fb": "10f60001"}})
    ctx = GLib.MainContext.default()
    deadline = time.monotonic() + 5
    while len(seen) < 2 and time.monotonic() < deadline:
        ctx.iteration(False)
        time.sleep(0.01)
    dev = dbus.Interface(h.bus.get_object(BLUEZ, h.device_path(mac)), PROPS_IFACE)
    props = dev.GetAll(DEVICE_IFACE)
    assert int(props["RSSI"]) == -60, props["RSSI"]
    assert bytes(props["ManufacturerData"][76]) == bytes.fromhex("0215aabb"), props["ManufacturerData"]
    assert bytes(props["ServiceData"]["0000feaa-0000-1000-8000-00805f9b34fb"]) == bytes.fromhex("10f60001")
    assert len(seen) >= 2, f"expected 2 PropertiesChanged signals, saw {seen}"
    assert seen[0][1] == DEVICE_IFACE and set(seen[0][2]) == {"RSSI", "ManufacturerData"}, seen[0]
    h.handle({"cmd": "remove_device", "mac": mac})
    try:
        h.handle({"cmd": "advertise", "mac": mac, "rssi": -1})
        raise AssertionError("advertise after remove_device should fail")
    except ValueError:
        pass
    watch.close()
    log("selftest OK")


def main():
    args = sys.argv[1:]
    unknown = [a for a in args if a not in ("--selftest", "--no-adapter")]
    if unknown:
        print(f"usage: {sys.argv[0]} [--selftest] [--no-adapter]", file=sys.stderr)
        return 2
    h = Harness(with_adapter="--no-adapter" not in args)
    atexit.register(h.cleanup)

    def on_signal(signum, _frame):
        h.cleanup()
        os._exit(0)

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)

    try:
        h.start()
    except Exception as e:  # noqa: BLE001
        log(f"startup failed: {e}")
        print(f"ERR startup failed: {e}".replace("\n", " "), flush=True)
        h.cleanup()
        return 1

    if "--selftest" in args:
        try:
            selftest(h)
        except Exception as e:  # noqa: BLE001
            log(f"selftest FAILED: {e!r}")
            return 1
        finally:
            h.cleanup()
        return 0

    print(f"READY {h.address}", flush=True)
    h.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
