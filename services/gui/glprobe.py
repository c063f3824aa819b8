"""Whether the display's OpenGL can run Dear PyGui, asked before Dear PyGui opens a window.

Dear PyGui asks GLFW for an OpenGL 3.0 context. Where the driver offers less (a Raspberry Pi 0-3's
VC4 offers 2.1) GLFW fails with GLXBadFBConfig and Dear PyGui then trips an assertion inside GLFW:
SIGABRT, no message, and the restart loop starts it again and again. So the same request is made
here first, through libX11 and libGL directly, and a refusal is one line and exit status 2.
"""

from __future__ import annotations

import ctypes
import ctypes.util

GL_MAJOR, GL_MINOR = 3, 0  # what Dear PyGui's GLFW window asks for
GLX_X_RENDERABLE, GLX_DRAWABLE_TYPE, GLX_RENDER_TYPE, GLX_DOUBLEBUFFER = 0x8012, 0x8010, 0x8011, 5
GLX_WINDOW_BIT, GLX_RGBA_BIT = 0x1, 0x1
GLX_CONTEXT_MAJOR_VERSION_ARB, GLX_CONTEXT_MINOR_VERSION_ARB = 0x2091, 0x2092

ADVICE = ("Dear PyGui needs OpenGL 3 (a Raspberry Pi 4 or 5 with a 64-bit OS; a Pi 0-3 offers OpenGL 2.1); "
          "use the terminal viewer instead: python -m services.tui")

_ErrorHandler = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
_CreateContext = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                  ctypes.c_int, ctypes.POINTER(ctypes.c_int))


def _library(name: str, soname: str):
    path = ctypes.util.find_library(name) or soname
    try:
        return ctypes.CDLL(path)
    except OSError:
        return None


def _declare(x11, gl) -> None:
    x11.XOpenDisplay.restype, x11.XOpenDisplay.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    x11.XDefaultScreen.argtypes = [ctypes.c_void_p]
    x11.XSync.argtypes = [ctypes.c_void_p, ctypes.c_int]
    x11.XFree.argtypes = [ctypes.c_void_p]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    x11.XSetErrorHandler.restype, x11.XSetErrorHandler.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    gl.glXChooseFBConfig.restype = ctypes.POINTER(ctypes.c_void_p)
    gl.glXChooseFBConfig.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int),
                                     ctypes.POINTER(ctypes.c_int)]
    gl.glXGetProcAddressARB.restype, gl.glXGetProcAddressARB.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    gl.glXDestroyContext.argtypes = [ctypes.c_void_p, ctypes.c_void_p]


def _ints(*values: int):
    return (ctypes.c_int * (len(values) + 1))(*values, 0)


def gl_problem() -> str | None:
    """None when an OpenGL 3.0 context can be made on the display, else why not (one line)."""
    x11, gl = _library("X11", "libX11.so.6"), _library("GL", "libGL.so.1")
    if x11 is None or gl is None:
        return f"no OpenGL library (libGL.so.1, libX11.so.6) is installed; {ADVICE}"
    _declare(x11, gl)
    display = x11.XOpenDisplay(None)
    if not display:
        return "the X display cannot be opened"
    try:
        return _try_context(x11, gl, display)
    finally:
        x11.XCloseDisplay(display)


def _try_context(x11, gl, display) -> str | None:
    count = ctypes.c_int(0)
    wanted = _ints(GLX_X_RENDERABLE, 1, GLX_DRAWABLE_TYPE, GLX_WINDOW_BIT, GLX_RENDER_TYPE, GLX_RGBA_BIT,
                   GLX_DOUBLEBUFFER, 1)
    configs = gl.glXChooseFBConfig(display, x11.XDefaultScreen(display), wanted, ctypes.byref(count))
    if not configs or count.value == 0:
        return f"the display offers no OpenGL window configuration (no GLX); {ADVICE}"
    try:
        address = gl.glXGetProcAddressARB(b"glXCreateContextAttribsARB")
        if not address:
            return f"the OpenGL driver cannot make versioned contexts; {ADVICE}"
        errors: list[int] = []
        # An X error (GLXBadFBConfig) arrives asynchronously; collect it instead of Xlib's default
        # handler, which would end the process.
        handler = _ErrorHandler(lambda _display, _event: errors.append(1) or 0)
        previous = x11.XSetErrorHandler(ctypes.cast(handler, ctypes.c_void_p))
        try:
            context = _CreateContext(address)(display, configs[0], None, 1,
                                              _ints(GLX_CONTEXT_MAJOR_VERSION_ARB, GL_MAJOR,
                                                    GLX_CONTEXT_MINOR_VERSION_ARB, GL_MINOR))
            x11.XSync(display, 0)
        finally:
            x11.XSetErrorHandler(previous)
        if context:
            gl.glXDestroyContext(display, context)
        if errors or not context:
            return f"the OpenGL driver refuses an OpenGL {GL_MAJOR}.{GL_MINOR} context; {ADVICE}"
        return None
    finally:
        x11.XFree(configs)


if __name__ == "__main__":
    print(gl_problem() or f"OpenGL {GL_MAJOR}.{GL_MINOR}: available")
