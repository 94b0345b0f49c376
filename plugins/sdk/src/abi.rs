//! ABI v1: the `#[repr(C)]` contract between `tallyd` and a plugin library.
//!
//! Plugin authors never touch this module: [`export_plugin!`](crate::export_plugin)
//! fills it in. It is public because the daemon's loader reads the same types.
//!
//! The rules that keep the boundary sound whatever compiler built either side:
//!
//! - Only `#[repr(C)]` structs of integers, raw pointers, `bool` and
//!   `extern "C"` function pointers cross. Everything else crosses as JSON bytes
//!   (see [`crate::protocol`]).
//! - Whoever allocates a buffer frees it: an [`OwnedBytes`] carries the
//!   `release` function of the side that allocated it. [`Bytes`] are borrowed
//!   for the duration of one call only.
//! - No unwind crosses: every entry point runs inside `catch_unwind` and turns a
//!   panic into [`Status::PANICKED`] with the panic message.
//! - The ABI major version is in the entry symbol's name, so a library built
//!   for another major is told apart from a library that is no plugin at all.
//!   Within a major, the vtables only grow at their end, and carry their size.
//!
//! This module and the daemon's loader are the only places with `unsafe`.
#![allow(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

use chrono::{DateTime, Utc};

use crate::protocol::{CollectRequest, Created, Error, HttpRequest, HttpResponse, Level};
use crate::{Host, Plugin};

/// First bytes of every descriptor; a library whose entry answers anything else is refused.
pub const MAGIC: [u8; 8] = *b"TALLYPLG";
/// The ABI major this SDK speaks. A daemon loads only plugins of its own major.
pub const ABI_VERSION: u32 = 1;
/// Grows when fields are appended to the vtables; older plugins stay loadable.
pub const ABI_MINOR: u32 = 0;
/// The exported entry symbol of ABI v1, NUL-terminated for `dlsym`.
pub const ENTRY_SYMBOL: &[u8] = b"tally_plugin_entry_v1\0";
/// The entry symbol's name for another ABI major, used to tell an operator which
/// ABI a refused library speaks.
pub fn entry_symbol_for(major: u32) -> String {
    format!("tally_plugin_entry_v{major}")
}

/// The version of this SDK, recorded in every plugin built with it.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The signature of the entry symbol.
pub type EntryFn = unsafe extern "C" fn() -> *const Descriptor;

/// Borrowed bytes, valid only during the call that received them.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Bytes {
    pub ptr: *const u8,
    pub len: usize,
}

impl Bytes {
    /// Borrows a slice for the duration of a call.
    pub const fn from_slice(s: &[u8]) -> Bytes {
        Bytes {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// Views the bytes as a slice.
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes that stay valid and unchanged
    /// for the lifetime `'a` chosen by the caller (the current call, or
    /// `'static` for the descriptor's strings).
    pub unsafe fn as_slice<'a>(&self) -> &'a [u8] {
        if self.ptr.is_null() || self.len == 0 {
            return &[];
        }
        // SAFETY: guaranteed by this function's contract.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Bytes owned by the side that allocated them. The receiver reads them and
/// then calls `release` exactly once (see [`OwnedBytes::into_vec`]).
#[repr(C)]
pub struct OwnedBytes {
    pub ptr: *mut u8,
    pub len: usize,
    pub cap: usize,
    pub release: Option<unsafe extern "C" fn(ptr: *mut u8, len: usize, cap: usize)>,
}

impl OwnedBytes {
    /// An empty buffer that needs no release; callers pass it as the out-slot.
    pub const fn empty() -> OwnedBytes {
        OwnedBytes {
            ptr: std::ptr::null_mut(),
            len: 0,
            cap: 0,
            release: None,
        }
    }

    /// Hands a `Vec` over the boundary; its memory comes back to this image's
    /// allocator through `release`.
    pub fn from_vec(v: Vec<u8>) -> OwnedBytes {
        let mut v = std::mem::ManuallyDrop::new(v);
        OwnedBytes {
            ptr: v.as_mut_ptr(),
            len: v.len(),
            cap: v.capacity(),
            release: Some(release_vec),
        }
    }

    /// Copies the bytes out and gives the buffer back to its allocator.
    ///
    /// # Safety
    /// `self` must have been filled by the other side of the boundary (or by
    /// [`OwnedBytes::from_vec`]) and not released yet.
    pub unsafe fn into_vec(self) -> Vec<u8> {
        let copy = if self.ptr.is_null() || self.len == 0 {
            Vec::new()
        } else {
            // SAFETY: the allocating side guarantees `len` readable bytes at `ptr`
            // until `release` is called, which happens below, after the copy.
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }.to_vec()
        };
        if let Some(release) = self.release {
            // SAFETY: `release` belongs to the allocating side and is called once.
            unsafe { release(self.ptr, self.len, self.cap) };
        }
        copy
    }
}

unsafe extern "C" fn release_vec(ptr: *mut u8, len: usize, cap: usize) {
    if !ptr.is_null() {
        // SAFETY: `ptr`, `len` and `cap` come from a `Vec<u8>` taken apart in
        // `OwnedBytes::from_vec` of this same image, so this image's allocator owns it.
        drop(unsafe { Vec::from_raw_parts(ptr, len, cap) });
    }
}

/// The result of a call across the boundary. The out-buffer's content depends on it.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Status(pub i32);

impl Status {
    /// The out-buffer holds the JSON answer.
    pub const OK: Status = Status(0);
    /// The out-buffer holds a JSON [`Error`].
    pub const ERROR: Status = Status(1);
    /// The out-buffer holds the UTF-8 panic message.
    pub const PANICKED: Status = Status(2);
    /// The input could not be decoded; the out-buffer holds a UTF-8 description.
    pub const BAD_REQUEST: Status = Status(3);
    /// The other side does not offer this call.
    pub const UNSUPPORTED: Status = Status(4);
}

/// A plugin instance, opaque to the daemon.
#[repr(C)]
pub struct Instance {
    _private: [u8; 0],
}

/// What the entry symbol returns: who the plugin is and its vtable.
#[repr(C)]
pub struct Descriptor {
    pub magic: [u8; 8],
    pub abi_major: u32,
    pub abi_minor: u32,
    /// `size_of::<Descriptor>()` as compiled into the plugin.
    pub size: usize,
    pub sdk_version: Bytes,
    pub plugin_name: Bytes,
    pub plugin_version: Bytes,
    /// `cfg!(panic = "unwind")` of the plugin build: with `panic = "abort"` a
    /// panic cannot be caught and ends the process.
    pub panic_unwind: bool,
    /// Last on purpose: only the vtable grows, at its end.
    pub vtable: PluginVTable,
}

/// The plugin's functions. Every call may arrive on a different thread; the
/// daemon never calls one instance from two threads at once.
#[repr(C)]
pub struct PluginVTable {
    /// `size_of::<PluginVTable>()` as compiled into the plugin.
    pub size: usize,
    /// Writes a JSON [`Description`](crate::Description) to `out`.
    pub describe: unsafe extern "C" fn(out: *mut OwnedBytes) -> Status,
    /// Creates an instance from JSON settings. On `OK`, `*instance` is set and
    /// `out` holds a JSON [`Created`]; otherwise `out` holds the error.
    /// `host` must stay valid until `destroy`.
    pub create: unsafe extern "C" fn(
        host: *const HostVTable,
        settings: Bytes,
        instance: *mut *mut Instance,
        out: *mut OwnedBytes,
    ) -> Status,
    /// One collection run: a JSON [`CollectRequest`] in, a JSON
    /// [`CollectResponse`](crate::CollectResponse) (or error) out.
    pub collect: unsafe extern "C" fn(
        instance: *mut Instance,
        request: Bytes,
        out: *mut OwnedBytes,
    ) -> Status,
    /// Drops the instance.
    pub destroy: unsafe extern "C" fn(instance: *mut Instance),
}

/// The daemon's services, handed to `create`. The functions may be called from
/// any thread, and only during a plugin call.
#[repr(C)]
pub struct HostVTable {
    /// `size_of::<HostVTable>()` as compiled into the daemon.
    pub size: usize,
    pub abi_minor: u32,
    /// Opaque, owned by the daemon, passed back to every function.
    pub ctx: *const c_void,
    pub log: unsafe extern "C" fn(ctx: *const c_void, level: u32, message: Bytes),
    pub now_unix_ms: unsafe extern "C" fn(ctx: *const c_void) -> i64,
    pub cancelled: unsafe extern "C" fn(ctx: *const c_void) -> bool,
    /// A service call: `method` names it (`"http"`), `payload` and the answer are
    /// JSON; on `ERROR` the answer is a JSON [`Error`]. The daemon allocates `out`.
    pub call: unsafe extern "C" fn(
        ctx: *const c_void,
        method: Bytes,
        payload: Bytes,
        out: *mut OwnedBytes,
    ) -> Status,
}

/// A descriptor in a `static`: raw pointers are not `Sync`, but these point to
/// `'static` string literals and functions only, which never change.
#[doc(hidden)]
pub struct StaticDescriptor(Descriptor);

// SAFETY: every pointer inside refers to immutable `'static` data or code.
unsafe impl Sync for StaticDescriptor {}

impl StaticDescriptor {
    #[doc(hidden)]
    pub const fn new<P: Plugin>(version: &'static str, panic_unwind: bool) -> StaticDescriptor {
        StaticDescriptor(Descriptor {
            magic: MAGIC,
            abi_major: ABI_VERSION,
            abi_minor: ABI_MINOR,
            size: std::mem::size_of::<Descriptor>(),
            sdk_version: Bytes::from_slice(SDK_VERSION.as_bytes()),
            plugin_name: Bytes::from_slice(P::NAME.as_bytes()),
            plugin_version: Bytes::from_slice(version.as_bytes()),
            panic_unwind,
            vtable: PluginVTable {
                size: std::mem::size_of::<PluginVTable>(),
                describe: describe::<P>,
                create: create::<P>,
                collect: collect::<P>,
                destroy: destroy::<P>,
            },
        })
    }

    #[doc(hidden)]
    pub fn as_ptr(&'static self) -> *const Descriptor {
        &self.0
    }
}

thread_local! {
    static IN_GUARD: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The plugin image has its own copy of std and so its own panic hook. Inside
/// an entry point the hook records the message and location for the error
/// instead of printing to the daemon's stderr; elsewhere (a plugin's own tests)
/// the previous hook runs as usual.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_GUARD.with(Cell::get) {
                let text = info.to_string().replace('\n', " ");
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(text));
            } else {
                previous(info);
            }
        }));
    });
}

enum Outcome {
    Ok(Vec<u8>),
    Err(Error),
    BadRequest(String),
}

/// Every exported function goes through here: no panic reaches the `extern "C"` edge.
fn guard(out: *mut OwnedBytes, f: impl FnOnce() -> Outcome) -> Status {
    install_panic_hook();
    IN_GUARD.with(|g| g.set(true));
    let caught = catch_unwind(AssertUnwindSafe(f));
    IN_GUARD.with(|g| g.set(false));
    let (status, body) = match caught {
        Ok(Outcome::Ok(body)) => (Status::OK, body),
        Ok(Outcome::Err(e)) => (Status::ERROR, error_json(&e)),
        Ok(Outcome::BadRequest(why)) => (Status::BAD_REQUEST, why.into_bytes()),
        Err(payload) => {
            let recorded = LAST_PANIC.with(|p| p.borrow_mut().take());
            let message = recorded.unwrap_or_else(|| panic_payload_text(payload.as_ref()));
            (Status::PANICKED, message.into_bytes())
        }
    };
    if !out.is_null() {
        // SAFETY: the daemon passes a valid, writable out-slot; writing (not
        // assigning) avoids dropping whatever uninitialised value it held.
        unsafe { out.write(OwnedBytes::from_vec(body)) };
    }
    status
}

fn panic_payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked with a non-text payload".to_owned()
    }
}

fn error_json(e: &Error) -> Vec<u8> {
    serde_json::to_vec(e).unwrap_or_else(|_| e.message.clone().into_bytes())
}

fn to_json<T: serde::Serialize>(value: &T) -> Outcome {
    match serde_json::to_vec(value) {
        Ok(v) => Outcome::Ok(v),
        Err(e) => Outcome::Err(Error::internal(format!("cannot encode answer: {e}"))),
    }
}

unsafe extern "C" fn describe<P: Plugin>(out: *mut OwnedBytes) -> Status {
    guard(out, || {
        let mut d = P::describe();
        d.name = P::NAME.to_owned();
        to_json(&d)
    })
}

/// What an instance pointer points to.
struct Slot<P> {
    plugin: P,
    host: Host,
}

unsafe extern "C" fn create<P: Plugin>(
    host: *const HostVTable,
    settings: Bytes,
    instance: *mut *mut Instance,
    out: *mut OwnedBytes,
) -> Status {
    guard(out, || {
        if host.is_null() || instance.is_null() {
            return Outcome::BadRequest("create: null host or instance slot".to_owned());
        }
        // SAFETY: the daemon keeps `settings` valid for this call.
        let bytes = unsafe { settings.as_slice() };
        let settings = match crate::parse_settings::<P>(bytes) {
            Ok(s) => s,
            Err(e) => return Outcome::Err(e),
        };
        let host = Host::from_ffi(FfiHost { vt: host });
        match P::new(settings, &host) {
            Ok(plugin) => {
                let created = Created {
                    emits: plugin.emits(),
                };
                let slot = Box::new(Slot { plugin, host });
                // SAFETY: `instance` was checked non-null and is the daemon's out-slot.
                unsafe { instance.write(Box::into_raw(slot).cast::<Instance>()) };
                to_json(&created)
            }
            Err(e) => Outcome::Err(e),
        }
    })
}

unsafe extern "C" fn collect<P: Plugin>(
    instance: *mut Instance,
    request: Bytes,
    out: *mut OwnedBytes,
) -> Status {
    guard(out, || {
        if instance.is_null() {
            return Outcome::BadRequest("collect: null instance".to_owned());
        }
        // SAFETY: `instance` came from `create::<P>` and the daemon never uses
        // it from two threads at once, so this is the only reference.
        let slot = unsafe { &mut *instance.cast::<Slot<P>>() };
        // SAFETY: the daemon keeps `request` valid for this call.
        let bytes = unsafe { request.as_slice() };
        let request: CollectRequest = match serde_json::from_slice(bytes) {
            Ok(r) => r,
            Err(e) => return Outcome::BadRequest(format!("undecodable collect request: {e}")),
        };
        match slot.plugin.collect(&request, &slot.host) {
            Ok(response) => to_json(&response),
            Err(e) => Outcome::Err(e),
        }
    })
}

unsafe extern "C" fn destroy<P: Plugin>(instance: *mut Instance) {
    if instance.is_null() {
        return;
    }
    // A panicking Drop must not unwind into the daemon; there is nobody to
    // tell, so the result is dropped.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `instance` came from `Box::into_raw` in `create::<P>` and the
        // daemon destroys it exactly once.
        drop(unsafe { Box::from_raw(instance.cast::<Slot<P>>()) });
    }));
}

/// The daemon's host vtable as seen from inside the plugin.
pub(crate) struct FfiHost {
    vt: *const HostVTable,
}

// SAFETY: the daemon promises that its host functions may be called from any
// thread (the instance may move between its blocking-pool threads).
unsafe impl Send for FfiHost {}
// SAFETY: as above; the host functions take only shared references.
unsafe impl Sync for FfiHost {}

impl FfiHost {
    fn vt(&self) -> &HostVTable {
        // SAFETY: the daemon keeps the host vtable alive until `destroy`.
        unsafe { &*self.vt }
    }

    pub(crate) fn log(&self, level: Level, message: &str) {
        let vt = self.vt();
        // SAFETY: `message` lives for the call; `ctx` is the daemon's own.
        unsafe { (vt.log)(vt.ctx, level as u32, Bytes::from_slice(message.as_bytes())) }
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        let vt = self.vt();
        // SAFETY: a plain call with the daemon's own context.
        let ms = unsafe { (vt.now_unix_ms)(vt.ctx) };
        DateTime::from_timestamp_millis(ms).unwrap_or_default()
    }

    pub(crate) fn cancelled(&self) -> bool {
        let vt = self.vt();
        // SAFETY: a plain call with the daemon's own context.
        unsafe { (vt.cancelled)(vt.ctx) }
    }

    pub(crate) fn http(&self, request: &HttpRequest) -> Result<HttpResponse, Error> {
        let payload = serde_json::to_vec(request)
            .map_err(|e| Error::internal(format!("cannot encode http request: {e}")))?;
        let vt = self.vt();
        let mut out = OwnedBytes::empty();
        // SAFETY: both inputs live for the call; `out` is a valid slot the
        // daemon fills with a buffer it allocated.
        let status = unsafe {
            (vt.call)(
                vt.ctx,
                Bytes::from_slice(b"http"),
                Bytes::from_slice(&payload),
                &mut out,
            )
        };
        // SAFETY: `out` was filled by the daemon during the call above.
        let body = unsafe { out.into_vec() };
        match status {
            Status::OK => serde_json::from_slice(&body)
                .map_err(|e| Error::internal(format!("undecodable http answer from tallyd: {e}"))),
            Status::ERROR => Err(serde_json::from_slice(&body)
                .unwrap_or_else(|_| Error::upstream(String::from_utf8_lossy(&body).into_owned()))),
            other => Err(Error::internal(format!(
                "tallyd refused the http call (status {}): {}",
                other.0,
                String::from_utf8_lossy(&body)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Drives the trampolines through the vtable exactly as the daemon does,
    //! without `dlopen`, with a host vtable written in Rust.

    use super::*;
    use crate::protocol::{CollectResponse, Description, Observation, Window};

    struct Boom {
        mode: String,
    }

    impl Plugin for Boom {
        const NAME: &'static str = "boom";
        type Settings = serde_json::Value;

        fn describe() -> Description {
            Description::new("test plugin")
        }

        fn new(settings: serde_json::Value, _host: &Host) -> Result<Self, Error> {
            match settings["mode"].as_str() {
                Some(m) => Ok(Boom { mode: m.to_owned() }),
                None => Err(Error::settings("mode: missing")),
            }
        }

        fn emits(&self) -> Vec<String> {
            vec!["n".to_owned()]
        }

        fn collect(&mut self, req: &CollectRequest, host: &Host) -> Result<CollectResponse, Error> {
            match self.mode.as_str() {
                "panic" => panic!("boom in collect"),
                "error" => Err(Error::upstream("platform said no")),
                "http" => {
                    let r = host.http(&HttpRequest::get("http://h.test/x"))?;
                    let mut out = CollectResponse::default();
                    out.observations
                        .push(Observation::new("n", req.window.to, r.status as f64));
                    host.info("done");
                    Ok(out)
                }
                _ => {
                    let mut out = CollectResponse::default();
                    out.observations.push(Observation::new(
                        "n",
                        req.window.to,
                        host.now().timestamp() as f64,
                    ));
                    Ok(out)
                }
            }
        }
    }

    static DESC: StaticDescriptor = StaticDescriptor::new::<Boom>("9.9.9", cfg!(panic = "unwind"));

    unsafe extern "C" fn h_log(_ctx: *const c_void, level: u32, message: Bytes) {
        // SAFETY: the plugin passes a message valid for the call.
        let text = String::from_utf8(unsafe { message.as_slice() }.to_vec()).unwrap();
        LOGGED.with(|l| l.borrow_mut().push((level, text)));
    }
    unsafe extern "C" fn h_now(_ctx: *const c_void) -> i64 {
        1_700_000_000_000
    }
    unsafe extern "C" fn h_cancelled(_ctx: *const c_void) -> bool {
        false
    }
    unsafe extern "C" fn h_call(
        _ctx: *const c_void,
        method: Bytes,
        _payload: Bytes,
        out: *mut OwnedBytes,
    ) -> Status {
        // SAFETY: valid for the call.
        assert_eq!(unsafe { method.as_slice() }, b"http");
        let body = br#"{"status": 204, "headers": [], "body": ""}"#.to_vec();
        // SAFETY: the plugin passes a writable slot.
        unsafe { out.write(OwnedBytes::from_vec(body)) };
        Status::OK
    }

    thread_local! {
        static LOGGED: RefCell<Vec<(u32, String)>> = const { RefCell::new(Vec::new()) };
    }

    static HOST: HostTable = HostTable(HostVTable {
        size: std::mem::size_of::<HostVTable>(),
        abi_minor: ABI_MINOR,
        ctx: std::ptr::null(),
        log: h_log,
        now_unix_ms: h_now,
        cancelled: h_cancelled,
        call: h_call,
    });
    struct HostTable(HostVTable);
    // SAFETY: immutable, null context.
    unsafe impl Sync for HostTable {}

    fn create(settings: &str) -> (Status, *mut Instance, String) {
        let vt = &DESC.0.vtable;
        let mut inst: *mut Instance = std::ptr::null_mut();
        let mut out = OwnedBytes::empty();
        // SAFETY: valid pointers for the call, as the daemon passes them.
        let status = unsafe {
            (vt.create)(
                &HOST.0,
                Bytes::from_slice(settings.as_bytes()),
                &mut inst,
                &mut out,
            )
        };
        // SAFETY: filled by the call.
        let body = String::from_utf8(unsafe { out.into_vec() }).unwrap();
        (status, inst, body)
    }

    fn collect(inst: *mut Instance, request: &[u8]) -> (Status, String) {
        let mut out = OwnedBytes::empty();
        // SAFETY: `inst` is live, the request valid for the call.
        let status = unsafe { (DESC.0.vtable.collect)(inst, Bytes::from_slice(request), &mut out) };
        // SAFETY: filled by the call.
        (
            status,
            String::from_utf8(unsafe { out.into_vec() }).unwrap(),
        )
    }

    fn request() -> Vec<u8> {
        let d = chrono::NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        serde_json::to_vec(&CollectRequest::new("s", Window::new(d, d))).unwrap()
    }

    #[test]
    fn descriptor_carries_identity_and_sizes() {
        let d = &DESC.0;
        assert_eq!(d.magic, MAGIC);
        assert_eq!((d.abi_major, d.abi_minor), (ABI_VERSION, ABI_MINOR));
        // SAFETY: static strings.
        let name = unsafe { d.plugin_name.as_slice() };
        assert_eq!(name, b"boom");
        assert_eq!(unsafe { d.plugin_version.as_slice() }, b"9.9.9");
        assert_eq!(d.vtable.size, std::mem::size_of::<PluginVTable>());
        let mut out = OwnedBytes::empty();
        // SAFETY: valid out-slot.
        let status = unsafe { (d.vtable.describe)(&mut out) };
        assert_eq!(status, Status::OK);
        // SAFETY: filled by the call.
        let desc: Description = serde_json::from_slice(&unsafe { out.into_vec() }).unwrap();
        assert_eq!(desc.name, "boom");
    }

    #[test]
    fn create_collect_destroy_round_trip() {
        let (status, inst, body) = create(r#"{"mode": "ok"}"#);
        assert_eq!(status, Status::OK, "{body}");
        assert_eq!(body, r#"{"emits":["n"]}"#);
        let (status, body) = collect(inst, &request());
        assert_eq!(status, Status::OK, "{body}");
        let resp: CollectResponse = serde_json::from_str(&body).unwrap();
        assert_eq!(resp.observations[0].value, 1_700_000_000.0);
        // SAFETY: created above, destroyed once.
        unsafe { (DESC.0.vtable.destroy)(inst) };
    }

    #[test]
    fn settings_error_and_plugin_error_come_back_as_json() {
        let (status, inst, body) = create("{}");
        assert_eq!(status, Status::ERROR);
        assert!(inst.is_null());
        let e: Error = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (crate::ErrorKind::Settings, "mode: missing")
        );

        let (_, inst, _) = create(r#"{"mode": "error"}"#);
        let (status, body) = collect(inst, &request());
        assert_eq!(status, Status::ERROR);
        assert!(body.contains("platform said no"));
        // SAFETY: created above, destroyed once.
        unsafe { (DESC.0.vtable.destroy)(inst) };
    }

    #[test]
    fn a_panic_becomes_an_error_with_message_and_location() {
        let (_, inst, _) = create(r#"{"mode": "panic"}"#);
        let (status, body) = collect(inst, &request());
        assert_eq!(status, Status::PANICKED);
        assert!(body.contains("boom in collect"), "{body}");
        assert!(body.contains("abi.rs"), "{body}");
        // The instance is still usable (the daemon decides whether to recreate it).
        let (status, _) = collect(inst, &request());
        assert_eq!(status, Status::PANICKED);
        // SAFETY: created above, destroyed once.
        unsafe { (DESC.0.vtable.destroy)(inst) };
    }

    #[test]
    fn undecodable_request_is_a_bad_request() {
        let (_, inst, _) = create(r#"{"mode": "ok"}"#);
        let (status, body) = collect(inst, b"{not json");
        assert_eq!(status, Status::BAD_REQUEST);
        assert!(body.starts_with("undecodable collect request"), "{body}");
        // SAFETY: created above, destroyed once.
        unsafe { (DESC.0.vtable.destroy)(inst) };
    }

    #[test]
    fn host_services_cross_through_the_host_vtable() {
        let (_, inst, _) = create(r#"{"mode": "http"}"#);
        let (status, body) = collect(inst, &request());
        assert_eq!(status, Status::OK, "{body}");
        let resp: CollectResponse = serde_json::from_str(&body).unwrap();
        assert_eq!(resp.observations[0].value, 204.0);
        LOGGED.with(|l| {
            assert!(
                l.borrow()
                    .contains(&(Level::Info as u32, "done".to_owned()))
            )
        });
        // SAFETY: created above, destroyed once.
        unsafe { (DESC.0.vtable.destroy)(inst) };
    }
}

#[cfg(test)]
mod fuzz {
    //! Property-based fuzzing of the message decoding behind the trampolines:
    //! whatever bytes arrive as settings or as a collect request, the plugin
    //! answers `OK`, `ERROR` or `BAD_REQUEST` with a readable body, and never
    //! panics (a panic would come back as `PANICKED`, or, with `panic =
    //! "abort"`, end the daemon). 256 cases per property unless
    //! `PROPTEST_CASES` says otherwise.

    use proptest::prelude::*;

    use super::*;
    use crate::protocol::{CollectResponse, Description, Observation, Window};

    /// Typed settings with every shape serde can reject: a required string,
    /// a bounded integer, an optional list, unknown fields denied.
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        #[allow(dead_code)]
        mode: String,
        #[serde(default)]
        #[allow(dead_code)]
        limit: u8,
        #[serde(default)]
        #[allow(dead_code)]
        names: Option<Vec<String>>,
    }

    struct Echo;

    impl Plugin for Echo {
        const NAME: &'static str = "echo";
        type Settings = Settings;

        fn describe() -> Description {
            Description::new("fuzz target")
        }

        fn new(_settings: Settings, _host: &Host) -> Result<Self, Error> {
            Ok(Echo)
        }

        fn collect(
            &mut self,
            req: &CollectRequest,
            _host: &Host,
        ) -> Result<CollectResponse, Error> {
            let mut out = CollectResponse::default();
            for day in req.window.days().take(3) {
                out.observations.push(Observation::new("n", day, 1.0));
            }
            Ok(out)
        }
    }

    static DESC: StaticDescriptor = StaticDescriptor::new::<Echo>("0.0.0", cfg!(panic = "unwind"));

    unsafe extern "C" fn h_log(_ctx: *const c_void, _level: u32, _message: Bytes) {}
    unsafe extern "C" fn h_now(_ctx: *const c_void) -> i64 {
        1_700_000_000_000
    }
    unsafe extern "C" fn h_cancelled(_ctx: *const c_void) -> bool {
        false
    }
    unsafe extern "C" fn h_call(
        _ctx: *const c_void,
        _method: Bytes,
        _payload: Bytes,
        out: *mut OwnedBytes,
    ) -> Status {
        // SAFETY: the plugin passes a writable slot.
        unsafe { out.write(OwnedBytes::from_vec(b"no services here".to_vec())) };
        Status::UNSUPPORTED
    }

    struct HostTable(HostVTable);
    // SAFETY: immutable, null context.
    unsafe impl Sync for HostTable {}
    static HOST: HostTable = HostTable(HostVTable {
        size: std::mem::size_of::<HostVTable>(),
        abi_minor: ABI_MINOR,
        ctx: std::ptr::null(),
        log: h_log,
        now_unix_ms: h_now,
        cancelled: h_cancelled,
        call: h_call,
    });

    /// Calls `create` with raw settings bytes, destroying any instance made.
    fn create_raw(settings: &[u8]) -> (Status, Vec<u8>) {
        let mut inst: *mut Instance = std::ptr::null_mut();
        let mut out = OwnedBytes::empty();
        // SAFETY: valid pointers for the call, as the daemon passes them.
        let status = unsafe {
            (DESC.0.vtable.create)(&HOST.0, Bytes::from_slice(settings), &mut inst, &mut out)
        };
        // SAFETY: filled by the call.
        let body = unsafe { out.into_vec() };
        if !inst.is_null() {
            // SAFETY: created above, destroyed once.
            unsafe { (DESC.0.vtable.destroy)(inst) };
        }
        (status, body)
    }

    /// Calls `collect` on a fresh instance with raw request bytes.
    fn collect_raw(request: &[u8]) -> (Status, Vec<u8>) {
        let mut inst: *mut Instance = std::ptr::null_mut();
        let mut out = OwnedBytes::empty();
        // SAFETY: as in `create_raw`.
        let status = unsafe {
            (DESC.0.vtable.create)(
                &HOST.0,
                Bytes::from_slice(br#"{"mode": "x"}"#),
                &mut inst,
                &mut out,
            )
        };
        // SAFETY: filled by the call.
        drop(unsafe { out.into_vec() });
        assert_eq!(status, Status::OK);
        let mut out = OwnedBytes::empty();
        // SAFETY: `inst` is live, the request valid for the call.
        let status = unsafe { (DESC.0.vtable.collect)(inst, Bytes::from_slice(request), &mut out) };
        // SAFETY: filled by the call.
        let body = unsafe { out.into_vec() };
        // SAFETY: created above, destroyed once.
        unsafe { (DESC.0.vtable.destroy)(inst) };
        (status, body)
    }

    /// What the daemon can rely on for any answer.
    fn check_answer(status: Status, body: &[u8]) -> Result<(), TestCaseError> {
        match status {
            Status::OK => {
                prop_assert!(serde_json::from_slice::<serde_json::Value>(body).is_ok());
            }
            Status::ERROR => {
                let e: Result<Error, _> = serde_json::from_slice(body);
                prop_assert!(e.is_ok(), "ERROR with a body that is no Error: {:?}", body);
            }
            Status::BAD_REQUEST => {
                prop_assert!(std::str::from_utf8(body).is_ok());
                prop_assert!(!body.is_empty());
            }
            other => prop_assert!(false, "status {other:?}: {}", String::from_utf8_lossy(body)),
        }
        Ok(())
    }

    fn valid_request() -> Vec<u8> {
        let d = chrono::NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        serde_json::to_vec(&CollectRequest::new("s", Window::new(d, d))).unwrap()
    }

    /// Byte-level edits of a valid message: flips, inserts, deletions, cuts.
    fn mutate(mut bytes: Vec<u8>, edits: &[(u8, usize, u8)]) -> Vec<u8> {
        for &(op, at, b) in edits {
            let n = bytes.len();
            match op % 4 {
                0 if n > 0 => bytes[at % n] = b,
                1 => bytes.insert(at % (n + 1), b),
                2 if n > 0 => {
                    bytes.remove(at % n);
                }
                3 => bytes.truncate(at % (n + 1)),
                _ => {}
            }
        }
        bytes
    }

    /// JSON-ish bytes: likelier than random bytes to get past the first brace.
    fn json_like() -> impl Strategy<Value = Vec<u8>> {
        "[{}\\[\\]\":, 0-9a-z.eE+-]{0,64}".prop_map(String::into_bytes)
    }

    proptest! {
        #![proptest_config(ProptestConfig::default())]

        #[test]
        fn arbitrary_settings_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let (status, body) = create_raw(&bytes);
            check_answer(status, &body)?;
        }

        #[test]
        fn json_like_settings_never_panic(bytes in json_like()) {
            let (status, body) = create_raw(&bytes);
            check_answer(status, &body)?;
        }

        #[test]
        fn mutated_settings_never_panic(
            edits in prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..6)
        ) {
            let bytes = mutate(br#"{"mode": "x", "limit": 7, "names": ["a", "b"]}"#.to_vec(), &edits);
            let (status, body) = create_raw(&bytes);
            check_answer(status, &body)?;
        }

        #[test]
        fn arbitrary_request_bytes_are_a_bad_request(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let (status, body) = collect_raw(&bytes);
            check_answer(status, &body)?;
        }

        #[test]
        fn mutated_requests_never_panic(
            edits in prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..6)
        ) {
            let (status, body) = collect_raw(&mutate(valid_request(), &edits));
            check_answer(status, &body)?;
        }
    }
}
