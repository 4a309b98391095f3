"""One Minetest session: Xvfb and a Minetest client (with its built-in singleplayer server) in one process
group, a fresh world with the pose-logging mod, XTest input and frame grabs over one X connection."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MOD_DIR = Path(__file__).resolve().parent / "mod" / "ochre_pose"
CLIENT_MOD_DIR = Path(__file__).resolve().parent / "mod" / "ochre_client"
POSE_LOG = "ochre_pose.log"
CLIENT_LOG = "minetest.log"
APT_INSTALL = "apt-get install -y minetest xvfb"
GAME_ID = "minetest"
# Minetest key bindings (its defaults) for the raw action's keys; sprint is the mod's aux1 sprint.
KEYSYMS: dict[str, str] = {"forward": "w", "back": "s", "left": "a", "right": "d", "jump": "space",
                           "sneak": "Shift_L", "sprint": "e"}
# Minetest probes for a window this long after the server is up before the session counts as failed.
WINDOW_TIMEOUT_S = 10.0


class EpisodeError(RuntimeError):
    """The game failed during one episode (crash, stall, timeout): the episode is discarded."""


def find_binary(name: str) -> str | None:
    """Debian installs minetest to /usr/games, which is not on every PATH (root's, CI's)."""
    return shutil.which(name) or shutil.which(name, path="/usr/games:/usr/local/games")


@dataclass(frozen=True)
class GameSettings:
    """Fixed settings every episode's world and client get."""

    size: tuple[int, int]
    """Window (and screen) width, height in pixels."""
    map_seed: int
    """Map generator seed of the fresh world."""
    port: int
    """UDP port of the singleplayer server."""
    viewing_range: int
    """Minetest viewing_range (nodes)."""
    fov: int
    """Minetest fov (degrees)."""
    sensitivity: float
    """Minetest mouse_sensitivity: degrees of camera turn per mouse pixel."""
    time_of_day: float
    """Fixed time of day, 0..1 (0.5 is noon); time does not advance."""
    mapgen: str = "v7"
    """Map generator."""


def write_world(world: Path, s: GameSettings) -> None:
    """A fresh world: map seed, game, no damage, the pose-logging mod as a world mod."""
    (world / "worldmods").mkdir(parents=True)
    shutil.copytree(MOD_DIR, world / "worldmods" / MOD_DIR.name)
    (world / "world.mt").write_text(f"gameid = {GAME_ID}\nbackend = sqlite3\nplayer_backend = sqlite3\n"
                                    "auth_backend = sqlite3\ncreative_mode = false\nenable_damage = false\n")
    (world / "map_meta.txt").write_text(f"mg_name = {s.mapgen}\nseed = {s.map_seed}\n[end_of_params]\n")


def write_client_mods(home: Path) -> None:
    """The client-side mod goes to the client's user folder (HOME/.minetest), which is the episode's own."""
    mods = home / ".minetest" / "clientmods"
    mods.mkdir(parents=True)
    shutil.copytree(CLIENT_MOD_DIR, mods / CLIENT_MOD_DIR.name)
    (mods / "mods.conf").write_text(f"load_mod_{CLIENT_MOD_DIR.name} = true\n")


def client_config(s: GameSettings) -> str:
    w, h = s.size
    settings: dict[str, Any] = {
        "screen_w": w, "screen_h": h, "fullscreen": "false", "autosave_screensize": "false",
        "viewing_range": s.viewing_range, "fov": s.fov, "mouse_sensitivity": s.sensitivity,
        "time_speed": 0, "ochre_time_of_day": s.time_of_day, "enable_sound": "false",
        # Without a window manager focus is only what we set; the game must not pause or slow down for it.
        "pause_on_lost_focus": "false", "fps_max_unfocused": 60, "show_debug": "false",
        "enable_minimap": "false", "enable_damage": "false", "creative_mode": "false",
        # The server logs poses once per step: a short step gives the verification a fine time grid.
        "dedicated_server_step": 0.02, "bind_address": "127.0.0.1", "server_announce": "false",
        "enable_clouds": "false", "menu_last_game": GAME_ID, "mainmenu_last_selected_world": 1,
        # Software rendering (llvmpipe) on a shared core must still draw >= 16 frames a second: no shaders,
        # no smooth lighting, opaque leaves (forests are most of the geometry), no frame cap below that.
        "enable_shaders": "false", "smooth_lighting": "false", "leaves_style": "opaque",
        "enable_particles": "false", "fps_max": 120,
        "enable_client_modding": "true", "csm_restriction_flags": 0,
    }
    return "".join(f"{k} = {v}\n" for k, v in settings.items())


class PoseTail:
    """Reads the mod's pose log as it grows; keeps complete lines only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []
        self._buf = ""
        self._f: Any = None

    def poll(self) -> int:
        if self._f is None:
            if not self.path.exists():
                return 0
            self._f = open(self.path, encoding="ascii")
        self._buf += self._f.read()
        *done, self._buf = self._buf.split("\n")
        self.lines.extend(line for line in done if line)
        return len(done)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class Session:
    """Xvfb + Minetest for one episode. Use as a context manager: teardown always runs."""

    def __init__(self, workdir: Path, settings: GameSettings, start_timeout: float) -> None:
        self.workdir = workdir
        self.settings = settings
        self.start_timeout = start_timeout
        self.world = workdir / "world"
        self.pose = PoseTail(self.world / POSE_LOG)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.pgid: int | None = None
        self.display: Any = None
        self._held: set[str] = set()
        self._keycodes: dict[str, int] = {}
        self._logs: list[Any] = []

    # ------------------------------------------------------------------ start and stop
    def __enter__(self) -> Session:
        try:
            self._start()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def _start(self) -> None:
        from Xlib import XK, display as xdisplay

        s = self.settings
        write_world(self.world, s)
        write_client_mods(self.workdir)
        conf = self.workdir / "minetest.conf"
        conf.write_text(client_config(s))
        xvfb, minetest = find_binary("Xvfb"), find_binary("minetest")
        assert xvfb is not None and minetest is not None, "checked by the caller"
        w, h = s.size
        read_fd, write_fd = os.pipe()
        try:
            # -displayfd: Xvfb picks a free display itself, so parallel recorders never collide.
            # process_group=0: this Xvfb leads the episode's own group, which teardown kills as one.
            x = subprocess.Popen([xvfb, "-displayfd", str(write_fd), "-screen", "0", f"{w}x{h}x24",
                                  "-nolisten", "tcp"], pass_fds=(write_fd,), process_group=0,
                                 stdout=subprocess.DEVNULL, stderr=self._log_file("xvfb.log"))
            self.procs.append(x)
            self.pgid = x.pid
            os.close(write_fd)
            write_fd = -1
            number = self._read_display_number(read_fd, x)
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)
        env = dict(os.environ, DISPLAY=f":{number}", LIBGL_ALWAYS_SOFTWARE="1", HOME=str(self.workdir))
        self.procs.append(subprocess.Popen(
            [minetest, "--go", "--world", str(self.world), "--name", "ochre", "--port", str(s.port),
             "--config", str(conf), "--logfile", str(self.workdir / CLIENT_LOG)],
            env=env, process_group=self.pgid, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self._log_file("minetest.err")))
        self.display = xdisplay.Display(f":{number}")
        self._keycodes = {k: self.display.keysym_to_keycode(XK.string_to_keysym(v)) for k, v in KEYSYMS.items()}
        deadline = time.monotonic() + self.start_timeout
        while not self.pose.poll():
            self.check_alive()
            if time.monotonic() > deadline:
                raise EpisodeError(f"the player did not join within {self.start_timeout:.0f} s")
            time.sleep(0.1)
        self.focus()

    def _log_file(self, name: str) -> Any:
        f = open(self.workdir / name, "wb")
        self._logs.append(f)
        return f

    def _read_display_number(self, fd: int, proc: subprocess.Popen[bytes]) -> int:
        import select

        buf = b""
        deadline = time.monotonic() + 10.0
        while not buf.endswith(b"\n"):
            if proc.poll() is not None:
                raise EpisodeError(f"Xvfb exited with status {proc.returncode} ({self.workdir / 'xvfb.log'})")
            if time.monotonic() > deadline:
                raise EpisodeError("Xvfb did not report its display within 10 s")
            if select.select([fd], [], [], 0.1)[0]:
                buf += os.read(fd, 64)
        return int(buf)

    def focus(self) -> None:
        """Without a window manager nothing gives the game keyboard focus, and Minetest ignores the mouse
        while unfocused. Called again before driving: focus given while the client was still loading can
        be lost."""
        from Xlib import X

        deadline = time.monotonic() + WINDOW_TIMEOUT_S
        while True:
            window = self._game_window()
            if window is not None:
                break
            self.check_alive()
            if time.monotonic() > deadline:
                raise EpisodeError("no Minetest window appeared")
            time.sleep(0.1)
        window.set_input_focus(X.RevertToParent, X.CurrentTime)
        self.display.sync()

    def _game_window(self) -> Any:
        pending = list(self.display.screen().root.query_tree().children)
        while pending:
            win = pending.pop()
            attrs = win.get_attributes()
            if attrs.map_state == 2:  # IsViewable
                geo = win.get_geometry()
                if (geo.width, geo.height) == self.settings.size:
                    return win
            pending.extend(win.query_tree().children)
        return None

    def check_alive(self) -> None:
        names = ("Xvfb", "minetest")
        for name, p in zip(names, self.procs):
            if p.poll() is not None:
                raise EpisodeError(f"{name} exited with status {p.returncode}{self._log_hint()}")

    def _log_hint(self) -> str:
        log = self.workdir / "minetest.log"
        errors = [line for line in log.read_text(errors="replace").splitlines() if "ERROR" in line] \
            if log.exists() else []
        return f" (minetest.log: {errors[-1].strip()})" if errors else ""

    def teardown(self) -> None:
        """Kill the episode's process group (Xvfb and the client) and reap both; safe to call twice."""
        self.pose.close()
        if self.display is not None:
            try:
                self.display.close()
            except Exception:  # the X server may already be gone; the group kill below is what matters
                pass
            self.display = None
        if self.pgid is not None:
            self._kill_group(self.pgid)
            self.pgid = None
        for f in self._logs:
            f.close()
        self._logs = []

    def _kill_group(self, pgid: int) -> None:
        for sig, wait_s in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and any(p.poll() is None for p in self.procs):
                time.sleep(0.05)
            if all(p.poll() is not None for p in self.procs):
                break
        for p in self.procs:
            p.wait()

    # ------------------------------------------------------------------ input and frames
    def set_keys(self, held: set[str]) -> None:
        from Xlib import X
        from Xlib.ext import xtest

        for k in self._held - held:
            xtest.fake_input(self.display, X.KeyRelease, self._keycodes[k])
        for k in held - self._held:
            xtest.fake_input(self.display, X.KeyPress, self._keycodes[k])
        self._held = set(held)

    def move_mouse(self, dx: int, dy: int) -> None:
        from Xlib import X
        from Xlib.ext import xtest

        if dx or dy:
            # detail=True: relative motion; Minetest turns by the pointer's offset and re-centres it.
            xtest.fake_input(self.display, X.MotionNotify, detail=True, x=dx, y=dy)

    def flush(self) -> None:
        self.display.sync()

    def grab(self) -> np.ndarray:
        """The screen as RGB uint8 [h, w, 3]."""
        from Xlib import X

        w, h = self.settings.size
        img = self.display.screen().root.get_image(0, 0, w, h, X.ZPixmap, 0xFFFFFFFF)
        bgrx = np.frombuffer(img.data, dtype=np.uint8).reshape(h, w, 4)  # depth 24 in 32-bit BGRX pixels
        return bgrx[:, :, 2::-1].copy()
