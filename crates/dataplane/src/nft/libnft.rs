//! nftables scripts run in-process through libnftables (the library the `nft` tool is built
//! on), instead of one `nft -f` process per write.
//!
//! Why: on this kernel a process that committed a transaction waits, when it closes its
//! netlink socket, for the kernel to finish releasing the objects the transaction replaced
//! (an RCU grace period: 5–15 ms); with process start-up and `ip netns exec` a chain rewrite
//! through `nft -f` costs 16–28 ms, but under 1 ms through a context that stays open.
//!
//! The library is loaded at run time (`libnftables.so.1`, shipped with the `nftables`
//! package): when it is missing the backend keeps using `nft -f`. A context is not thread
//! safe and its socket belongs to the network namespace it was opened in, so one worker
//! thread, entered into the namespace once, owns the context and runs every script.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::mpsc;
use std::sync::Mutex;

use crate::error::DataplaneError;

/// Runs nftables scripts (the text `nft -f` reads) as one transaction each.
pub trait ScriptWriter: Send + Sync {
    fn run(&self, script: &str) -> Result<(), DataplaneError>;
}

type Job = (String, mpsc::Sender<Result<(), DataplaneError>>);

/// A libnftables context on a worker thread inside a network namespace.
pub struct LibNftables {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl std::fmt::Debug for LibNftables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LibNftables")
    }
}

/// The file name the library is loaded from.
pub const LIBRARY: &str = "libnftables.so.1";

type CtxNew = unsafe extern "C" fn(u32) -> *mut c_void;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type CtxBuffer = unsafe extern "C" fn(*mut c_void) -> c_int;
type CtxGetBuffer = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type RunCmd = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;

/// The functions we use, resolved from the loaded library (which the struct keeps loaded).
struct Api {
    _lib: libloading::Library,
    ctx_new: CtxNew,
    ctx_free: CtxFree,
    buffer_output: CtxBuffer,
    buffer_error: CtxBuffer,
    get_error: CtxGetBuffer,
    run_cmd: RunCmd,
}

fn load_error(what: &str, e: impl std::fmt::Display) -> DataplaneError {
    DataplaneError::Netlink(format!("libnftables: {what}: {e}"))
}

impl Api {
    fn load() -> Result<Api, DataplaneError> {
        // SAFETY: loading the system's libnftables runs its (trivial) initialisers only.
        let lib =
            unsafe { libloading::Library::new(LIBRARY) }.map_err(|e| load_error(LIBRARY, e))?;
        // SAFETY: the signatures are those of libnftables' stable public API (nftables.h).
        unsafe {
            let ctx_new = *lib
                .get::<CtxNew>(b"nft_ctx_new\0")
                .map_err(|e| load_error("nft_ctx_new", e))?;
            let ctx_free = *lib
                .get::<CtxFree>(b"nft_ctx_free\0")
                .map_err(|e| load_error("nft_ctx_free", e))?;
            let buffer_output = *lib
                .get::<CtxBuffer>(b"nft_ctx_buffer_output\0")
                .map_err(|e| load_error("nft_ctx_buffer_output", e))?;
            let buffer_error = *lib
                .get::<CtxBuffer>(b"nft_ctx_buffer_error\0")
                .map_err(|e| load_error("nft_ctx_buffer_error", e))?;
            let get_error = *lib
                .get::<CtxGetBuffer>(b"nft_ctx_get_error_buffer\0")
                .map_err(|e| load_error("nft_ctx_get_error_buffer", e))?;
            let run_cmd = *lib
                .get::<RunCmd>(b"nft_run_cmd_from_buffer\0")
                .map_err(|e| load_error("nft_run_cmd_from_buffer", e))?;
            Ok(Api {
                _lib: lib,
                ctx_new,
                ctx_free,
                buffer_output,
                buffer_error,
                get_error,
                run_cmd,
            })
        }
    }
}

/// An open context; freed on drop.
struct Ctx<'a> {
    api: &'a Api,
    ptr: *mut c_void,
}

impl<'a> Ctx<'a> {
    fn open(api: &'a Api) -> Result<Ctx<'a>, DataplaneError> {
        // SAFETY: plain constructor; NFT_CTX_DEFAULT = 0.
        let ptr = unsafe { (api.ctx_new)(0) };
        if ptr.is_null() {
            return Err(load_error("nft_ctx_new", "returned no context"));
        }
        // SAFETY: a valid context; buffering keeps output and errors off our stdout/stderr.
        unsafe {
            (api.buffer_output)(ptr);
            (api.buffer_error)(ptr);
        }
        Ok(Ctx { api, ptr })
    }

    fn run(&self, script: &str) -> Result<(), DataplaneError> {
        let text = CString::new(script).map_err(|_| {
            DataplaneError::invalid("nft script", "contains a NUL byte: not written")
        })?;
        // SAFETY: a valid context and a NUL-terminated buffer that outlives the call.
        let rc = unsafe { (self.api.run_cmd)(self.ptr, text.as_ptr()) };
        if rc == 0 {
            return Ok(());
        }
        // SAFETY: the error buffer is a NUL-terminated string owned by the context, valid
        // until the next run; copied out at once.
        let stderr = unsafe {
            let p = (self.api.get_error)(self.ptr);
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        Err(DataplaneError::CommandFailed {
            command: "libnftables: nft -f -".into(),
            status: rc,
            stderr,
        })
    }
}

impl Drop for Ctx<'_> {
    fn drop(&mut self) {
        // SAFETY: the context was made by nft_ctx_new and is freed once.
        unsafe { (self.api.ctx_free)(self.ptr) }
    }
}

impl LibNftables {
    /// Loads the library and opens a context inside `netns` (`/run/netns/NAME`) or the
    /// current namespace. Fails when the library cannot be loaded: use `nft -f` then.
    pub fn open(netns: Option<String>) -> Result<LibNftables, DataplaneError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("libnftables".into())
            .spawn(move || {
                let setup = (|| {
                    if let Some(ns) = &netns {
                        crate::netns::enter(ns)?;
                    }
                    Api::load()
                })();
                let api = match setup {
                    Ok(api) => api,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let ctx = match Ctx::open(&api) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                // Ends when the writer (the only sender) is dropped.
                for (script, reply) in rx {
                    let _ = reply.send(ctx.run(&script));
                }
            })
            .map_err(|e| DataplaneError::Netlink(format!("libnftables thread: {e}")))?;
        ready_rx
            .recv()
            .map_err(|_| DataplaneError::Netlink("libnftables thread died".into()))??;
        Ok(LibNftables {
            jobs: Mutex::new(tx),
        })
    }
}

impl ScriptWriter for LibNftables {
    fn run(&self, script: &str) -> Result<(), DataplaneError> {
        if script.is_empty() {
            return Ok(());
        }
        let (tx, rx) = mpsc::channel();
        {
            let jobs = self
                .jobs
                .lock()
                .map_err(|_| DataplaneError::Netlink("libnftables writer poisoned".into()))?;
            jobs.send((script.to_string(), tx))
                .map_err(|_| DataplaneError::Netlink("libnftables thread is gone".into()))?;
        }
        rx.recv()
            .map_err(|_| DataplaneError::Netlink("libnftables thread is gone".into()))?
    }
}
