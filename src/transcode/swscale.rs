//! `cascadeswscale`: an I420 → I420 scaler element around libswscale, registered in-process.
//!
//! Why: scaling was ~13 % of a 1080p ladder's CPU time with videoconvertscale's multi-tap paths
//! on GStreamer 1.22 (perf: a C horizontal loop in libgstvideo plus ORC vertical passes), about
//! twice the cost per frame of libswscale's SIMD bicubic (1080→720: 3.5 vs 1.7 ms). libswscale is
//! already on every machine Cascade runs on (FFmpeg is the fallback back end), and its bicubic is
//! what `ffmpeg -vf scale` uses, so the rungs come out like the FFmpeg back end's.
//!
//! libswscale is opened at run time (`dlopen`), not linked: when it is missing, the element is
//! simply not registered and rungs fall back to videoscale (see `available`).
//!
//! The element changes only the size (and pixel aspect ratio): no colour conversion, so the caps'
//! colorimetry passes through untouched. Chroma siting is libswscale's own (as in ffmpeg's
//! `scale`), whatever the caps' `chroma-site` says.

use std::ffi::{c_int, c_void, CStr};
use std::sync::{Mutex, OnceLock};

use gstreamer as gst;
use gstreamer_base as gst_base;
use gstreamer_video as gst_video;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;
use gst_video::prelude::*;
use gst_video::subclass::prelude::*;

/// The element's factory name.
pub const FACTORY: &str = "cascadeswscale";

const AV_PIX_FMT_YUV420P: c_int = 0;
const SWS_BICUBIC: c_int = 4;
const SWS_LANCZOS: c_int = 0x200;

/// The filters the element offers (its `method` property): libswscale's bicubic, the default and
/// `ffmpeg -vf scale`'s, and its Lanczos (3 lobes), sharper and about twice as costly per pixel.
pub const METHODS: &[&str] = &["bicubic", "lanczos"];

/// Output rows are padded to a multiple of this many bytes in every plane when downstream reads
/// strides from the video meta: libswscale's vertical SIMD passes want 16-byte aligned destination
/// rows, and a 854-pixel rung's tight 856/428-byte rows miss that.
/// Measured (libswscale 5.1, 1920x1080 → 854x480 bicubic): 2.2 ms per frame at 856/428, 1.95 ms
/// at 864/432.
const STRIDE_ALIGN: u32 = 32;

type GetContext =
    unsafe extern "C" fn(c_int, c_int, c_int, c_int, c_int, c_int, c_int, *mut c_void, *mut c_void, *const f64) -> *mut c_void;
type Scale = unsafe extern "C" fn(*mut c_void, *const *const u8, *const c_int, c_int, c_int, *const *mut u8, *const c_int) -> c_int;
type FreeContext = unsafe extern "C" fn(*mut c_void);

struct Api {
    get_context: GetContext,
    scale: Scale,
    free_context: FreeContext,
}

/// libswscale's three entry points, or why they could not be loaded.
fn api() -> Result<&'static Api, &'static str> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(|| {
        // FFmpeg 5.x (Debian 12) is .so.6; later releases bump the major. The three functions
        // used here have kept their signatures since FFmpeg 0.x.
        let names: [&CStr; 4] = [c"libswscale.so.6", c"libswscale.so.7", c"libswscale.so.8", c"libswscale.so"];
        let handle = names
            .iter()
            .map(|n| unsafe { libc::dlopen(n.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) })
            .find(|h| !h.is_null())
            .ok_or_else(|| "libswscale not found (libswscale.so.6/7/8)".to_string())?;
        let sym = |name: &CStr| {
            let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
            if p.is_null() {
                Err(format!("libswscale has no {}", name.to_string_lossy()))
            } else {
                Ok(p)
            }
        };
        // SAFETY: the symbols are libswscale's, with the C signatures declared above.
        unsafe {
            Ok(Api {
                get_context: std::mem::transmute::<*mut c_void, GetContext>(sym(c"sws_getContext")?),
                scale: std::mem::transmute::<*mut c_void, Scale>(sym(c"sws_scale")?),
                free_context: std::mem::transmute::<*mut c_void, FreeContext>(sym(c"sws_freeContext")?),
            })
        }
    })
    .as_ref()
    .map_err(|e| e.as_str())
}

/// Registers the element (once, after `gst::init`) if libswscale can be loaded. `Err` says why
/// it cannot be used.
pub fn register() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        api().map_err(str::to_string)?;
        gst::Element::register(None, FACTORY, gst::Rank::NONE, SwScale::static_type()).map_err(|e| e.to_string())
    })
    .clone()
}

/// Whether rungs can use the element (registered by `probe::init_gstreamer`).
pub fn available() -> bool {
    gst::ElementFactory::find(FACTORY).is_some()
}

glib::wrapper! {
    pub struct SwScale(ObjectSubclass<imp::SwScale>) @extends gst_video::VideoFilter, gst_base::BaseTransform, gst::Element, gst::Object;
}

mod imp {
    use super::*;

    /// An SwsContext for one input/output size pair.
    struct Context(*mut c_void);
    // SAFETY: an SwsContext is used by one thread at a time (under the element's mutex) and
    // libswscale keeps no thread-affine state in it.
    unsafe impl Send for Context {}
    impl Drop for Context {
        fn drop(&mut self) {
            if let Ok(api) = api() {
                unsafe { (api.free_context)(self.0) };
            }
        }
    }

    /// Contexts for the negotiated sizes: whole frames, and (interlaced caps with heights that
    /// split into two 4:2:0 fields) one field at a time.
    #[derive(Default)]
    struct Contexts {
        frame: Option<Context>,
        field: Option<Context>,
    }

    #[derive(Default)]
    pub struct SwScale {
        ctx: Mutex<Contexts>,
        /// Index into `METHODS`.
        method: Mutex<usize>,
    }

    /// An I420 context from `w`x`h` to `ow`x`oh` with libswscale's `flags` filter.
    fn context(api: &Api, (w, h): (u32, u32), (ow, oh): (u32, u32), flags: c_int) -> Result<Context, gst::LoggableError> {
        let p = unsafe {
            (api.get_context)(
                w as c_int,
                h as c_int,
                AV_PIX_FMT_YUV420P,
                ow as c_int,
                oh as c_int,
                AV_PIX_FMT_YUV420P,
                flags,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null(),
            )
        };
        if p.is_null() {
            return Err(gst::loggable_error!(gst::CAT_RUST, "sws_getContext failed for {}x{} -> {}x{}", w, h, ow, oh));
        }
        Ok(Context(p))
    }

    #[glib::object_subclass]
    impl ObjectSubclass for SwScale {
        const NAME: &'static str = "CascadeSwScale";
        type Type = super::SwScale;
        type ParentType = gst_video::VideoFilter;
    }

    impl ObjectImpl for SwScale {
        fn properties() -> &'static [glib::ParamSpec] {
            static PROPS: OnceLock<Vec<glib::ParamSpec>> = OnceLock::new();
            PROPS.get_or_init(|| {
                vec![glib::ParamSpecString::builder("method")
                    .nick("Method")
                    .blurb("libswscale filter: bicubic or lanczos (applies from the next caps)")
                    .default_value(Some(METHODS[0]))
                    .build()]
            })
        }

        fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
            if pspec.name() == "method" {
                let name = value.get::<Option<String>>().ok().flatten().unwrap_or_else(|| METHODS[0].to_string());
                match METHODS.iter().position(|m| *m == name) {
                    Some(i) => *self.method.lock().unwrap_or_else(|e| e.into_inner()) = i,
                    None => gst::warning!(gst::CAT_RUST, imp = self, "unknown method {name:?}, keeping the current one"),
                }
            }
        }

        fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
            match pspec.name() {
                "method" => METHODS[*self.method.lock().unwrap_or_else(|e| e.into_inner())].to_value(),
                _ => unreachable!("only the properties declared above are asked for"),
            }
        }
    }
    impl GstObjectImpl for SwScale {}

    impl ElementImpl for SwScale {
        fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
            static META: OnceLock<gst::subclass::ElementMetadata> = OnceLock::new();
            Some(META.get_or_init(|| {
                gst::subclass::ElementMetadata::new(
                    "Cascade libswscale scaler",
                    "Filter/Converter/Video/Scaler",
                    "Scales I420 video with libswscale's bicubic filter",
                    "Cascade",
                )
            }))
        }

        fn pad_templates() -> &'static [gst::PadTemplate] {
            static TEMPLATES: OnceLock<Vec<gst::PadTemplate>> = OnceLock::new();
            TEMPLATES.get_or_init(|| {
                let caps = gst_video::VideoCapsBuilder::new().format(gst_video::VideoFormat::I420).build();
                vec![
                    gst::PadTemplate::new("src", gst::PadDirection::Src, gst::PadPresence::Always, &caps).unwrap(),
                    gst::PadTemplate::new("sink", gst::PadDirection::Sink, gst::PadPresence::Always, &caps).unwrap(),
                ]
            })
        }
    }

    impl BaseTransformImpl for SwScale {
        const MODE: gst_base::subclass::BaseTransformMode = gst_base::subclass::BaseTransformMode::NeverInPlace;
        const PASSTHROUGH_ON_SAME_CAPS: bool = true;
        const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

        /// Any size and pixel aspect ratio on the other side; everything else as is. The caps
        /// themselves come first, so an unscaled path stays passthrough.
        fn transform_caps(&self, _direction: gst::PadDirection, caps: &gst::Caps, filter: Option<&gst::Caps>) -> Option<gst::Caps> {
            let mut scaled = caps.clone();
            for s in scaled.make_mut().iter_mut() {
                s.set("width", gst::IntRange::new(1, i32::MAX));
                s.set("height", gst::IntRange::new(1, i32::MAX));
                if s.has_field("pixel-aspect-ratio") {
                    s.set("pixel-aspect-ratio", gst::FractionRange::new(gst::Fraction::new(1, i32::MAX), gst::Fraction::new(i32::MAX, 1)));
                }
            }
            let mut out = caps.clone();
            out.merge(scaled);
            Some(match filter {
                Some(f) => f.intersect_with_mode(&out, gst::CapsIntersectMode::First),
                None => out,
            })
        }

        /// Output buffers with rows padded to `STRIDE_ALIGN` when every consumer reads strides
        /// from the video meta (x264enc, the next scaler, jpegenc do); tightly packed otherwise.
        fn decide_allocation(&self, query: &mut gst::query::Allocation) -> Result<(), gst::LoggableError> {
            let (caps, _) = query.get_owned();
            let padded = caps
                .as_ref()
                .and_then(|c| gst_video::VideoInfo::from_caps(c).ok())
                .filter(|info| info.stride().iter().take(info.n_planes() as usize).any(|s| !(*s as u32).is_multiple_of(STRIDE_ALIGN)));
            if let (Some(caps), Some(info), true) = (caps, padded, query.find_allocation_meta::<gst_video::VideoMeta>().is_some()) {
                let pool = gst_video::VideoBufferPool::new();
                let mut config = pool.config();
                config.set_params(Some(&caps), info.size() as u32, 0, 0);
                config.add_option(gst_video::BUFFER_POOL_OPTION_VIDEO_META.as_ref());
                config.add_option(gst_video::BUFFER_POOL_OPTION_VIDEO_ALIGNMENT.as_ref());
                config.set_video_alignment(&gst_video::VideoAlignment::new(0, 0, 0, 0, &[STRIDE_ALIGN - 1; gst_video::VIDEO_MAX_PLANES]));
                let aligned = gst::AllocationParams::new(gst::MemoryFlags::empty(), STRIDE_ALIGN as usize - 1, 0, 0);
                config.set_allocator(None::<&gst::Allocator>, Some(&aligned));
                if pool.set_config(config).is_ok() {
                    // Memory aligned like the rows (the pool would raise it itself, with a warning).
                    let first = query.allocation_params().next();
                    match first {
                        Some((allocator, mut params)) if params.align() < STRIDE_ALIGN as usize - 1 => {
                            params.set_align(STRIDE_ALIGN as usize - 1);
                            query.set_nth_allocation_param(0, allocator.as_ref(), params);
                        }
                        Some(_) => {}
                        None => query.add_allocation_param(None::<&gst::Allocator>, aligned),
                    }
                    // The parent (GstVideoFilter) configures the first pool of the query.
                    let first = query.allocation_pools().next().map(|(_, size, min, max)| (size, min, max));
                    match first {
                        Some((size, min, max)) => query.set_nth_allocation_pool(0, Some(&pool), size, min, max),
                        None => query.add_allocation_pool(Some(&pool), info.size() as u32, 0, 0),
                    }
                }
            }
            self.parent_decide_allocation(query)
        }
    }

    impl VideoFilterImpl for SwScale {
        fn set_info(
            &self,
            _incaps: &gst::Caps,
            in_info: &gst_video::VideoInfo,
            _outcaps: &gst::Caps,
            out_info: &gst_video::VideoInfo,
        ) -> Result<(), gst::LoggableError> {
            let api = api().map_err(|e| gst::loggable_error!(gst::CAT_RUST, "{}", e))?;
            let mut ctx = self.ctx.lock().unwrap_or_else(|e| e.into_inner());
            *ctx = Contexts::default();
            let (from, to) = ((in_info.width(), in_info.height()), (out_info.width(), out_info.height()));
            if from == to {
                return Ok(()); // same size, other caps (pixel aspect ratio): frames are copied
            }
            let method = METHODS[*self.method.lock().unwrap_or_else(|e| e.into_inner())];
            let flags = if method == "lanczos" { SWS_LANCZOS } else { SWS_BICUBIC };
            ctx.frame = Some(context(api, from, to, flags)?);
            // Interlaced frames are scaled field by field, as videoscale does (and ffmpeg's
            // scale=interl=1): scaling both fields as one picture would blend them.
            if in_info.is_interlaced() && from.1 % 4 == 0 && to.1 % 4 == 0 {
                ctx.field = Some(context(api, (from.0, from.1 / 2), (to.0, to.1 / 2), flags)?);
            }
            Ok(())
        }

        fn transform_frame(
            &self,
            inframe: &gst_video::VideoFrameRef<&gst::BufferRef>,
            outframe: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
        ) -> Result<gst::FlowSuccess, gst::FlowError> {
            let api = api().map_err(|_| gst::FlowError::NotNegotiated)?;
            let ctx = self.ctx.lock().unwrap_or_else(|e| e.into_inner());
            let (sws, fields) = match (&ctx.frame, &ctx.field) {
                (None, _) => {
                    inframe.copy(outframe).map_err(|_| gst::FlowError::Error)?;
                    return Ok(gst::FlowSuccess::Ok);
                }
                (Some(_), Some(field)) if inframe.is_interlaced() => (field, 2usize),
                (Some(frame), _) => (frame, 1usize),
            };
            let in_strides = inframe.plane_stride().to_vec();
            let out_strides = outframe.plane_stride().to_vec();
            let mut src = [[std::ptr::null::<u8>(); 4]; 2];
            let mut dst = [[std::ptr::null_mut::<u8>(); 4]; 2];
            let mut src_stride = [0 as c_int; 4];
            let mut dst_stride = [0 as c_int; 4];
            for i in 0..3 {
                let plane = inframe.plane_data(i as u32).map_err(|_| gst::FlowError::Error)?.as_ptr();
                let out = outframe.plane_data_mut(i as u32).map_err(|_| gst::FlowError::Error)?.as_mut_ptr();
                for f in 0..fields {
                    // Field f starts on row f and takes every `fields`-th row.
                    // SAFETY: row f < the plane's height, so the offset stays inside the plane.
                    src[f][i] = unsafe { plane.add(f * in_strides[i] as usize) };
                    dst[f][i] = unsafe { out.add(f * out_strides[i] as usize) };
                }
                src_stride[i] = in_strides[i] * fields as c_int;
                dst_stride[i] = out_strides[i] * fields as c_int;
            }
            let rows = inframe.height() as c_int / fields as c_int;
            for f in 0..fields {
                // SAFETY: the planes are mapped for the frames' lifetimes and laid out as the
                // negotiated I420 infos the context was made for (per field: every other row).
                let done =
                    unsafe { (api.scale)(sws.0, src[f].as_ptr(), src_stride.as_ptr(), 0, rows, dst[f].as_ptr(), dst_stride.as_ptr()) };
                if done <= 0 {
                    gst::element_imp_error!(self, gst::StreamError::Failed, ["sws_scale returned {}", done]);
                    return Err(gst::FlowError::Error);
                }
            }
            Ok(gst::FlowSuccess::Ok)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gstreamer_app as gst_app;

    /// The planes of a frame, rows packed (no stride padding): Y, U, V.
    type Planes = [Vec<u8>; 3];

    /// Runs `head ! <scaler> ! out caps ! appsink` for one frame and returns the output's size and
    /// planes. Errors on the bus fail at once instead of waiting for the timeout.
    fn run(head: &str, scaler: &str, out_caps: &str, input: Option<gst::Buffer>) -> ((u32, u32), Planes) {
        run_strides(head, scaler, out_caps, input, false).0
    }

    /// `run`, plus the output's plane strides. With `meta`, the sink tells upstream that it reads
    /// strides from the video meta (as x264enc does).
    fn run_strides(head: &str, scaler: &str, out_caps: &str, input: Option<gst::Buffer>, meta: bool) -> (((u32, u32), Planes), Vec<i32>) {
        crate::probe::init_gstreamer().unwrap();
        let desc = format!("{head} ! {scaler} ! {out_caps} ! appsink name=out sync=false");
        let p = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
        let sink = p.by_name("out").unwrap().downcast::<gst_app::AppSink>().unwrap();
        if meta {
            sink.static_pad("sink").unwrap().add_probe(gst::PadProbeType::QUERY_DOWNSTREAM, |_, info| {
                if let Some(gst::QueryViewMut::Allocation(q)) = info.query_mut().map(|q| q.view_mut()) {
                    q.add_allocation_meta::<gst_video::VideoMeta>(None);
                }
                gst::PadProbeReturn::Ok
            });
        }
        p.set_state(gst::State::Playing).unwrap();
        if let Some(buf) = input {
            let src = p.by_name("in").unwrap().downcast::<gst_app::AppSrc>().unwrap();
            src.push_buffer(buf).unwrap();
            src.end_of_stream().unwrap();
        }
        let sample = sink.try_pull_sample(gst::ClockTime::from_seconds(20));
        let error = p.bus().unwrap().pop_filtered(&[gst::MessageType::Error]);
        p.set_state(gst::State::Null).unwrap();
        if let Some(e) = error {
            panic!("{desc}: {e:?}");
        }
        let sample = sample.expect("a frame within 20 s");
        let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(sample.buffer().unwrap(), &info).unwrap();
        let planes = [0u32, 1, 2].map(|i| {
            let stride = frame.plane_stride()[i as usize] as usize;
            let w = frame.comp_width(i) as usize;
            let data = frame.plane_data(i).unwrap();
            (0..frame.comp_height(i) as usize).flat_map(|r| data[r * stride..r * stride + w].iter().copied()).collect()
        });
        (((info.width(), info.height()), planes), frame.plane_stride().to_vec())
    }

    /// One videotestsrc frame, BT.709 on both sides (or videoscale would also convert the matrix
    /// for SD sizes).
    fn one_frame(pattern: &str, scaler: &str, (in_w, in_h): (u32, u32), (out_w, out_h): (u32, u32)) -> ((u32, u32), Planes) {
        run(
            &format!("videotestsrc num-buffers=1 pattern={pattern} ! video/x-raw,format=I420,width={in_w},height={in_h},pixel-aspect-ratio=1/1,colorimetry=bt709"),
            scaler,
            &format!("video/x-raw,width={out_w},height={out_h},pixel-aspect-ratio=1/1,colorimetry=bt709"),
            None,
        )
    }

    fn psnr(a: &[u8], b: &[u8]) -> f64 {
        assert_eq!(a.len(), b.len());
        let mse = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>() / a.len() as f64;
        10.0 * (255.0f64 * 255.0 / mse.max(1e-9)).log10()
    }

    #[test]
    fn scales_like_videoscale_and_keeps_flat_colour() {
        crate::probe::init_gstreamer().unwrap();
        register().expect("libswscale is installed with ffmpeg on every machine Cascade is built on");
        assert!(available());
        // Odd output sizes on purpose (chroma planes round up); two patterns with edges in both
        // directions. Bicubic and catrom differ a little at sharp edges, so "close" is > 30 dB per
        // plane; a shifted, swapped or garbled plane is far below that.
        for pattern in ["smpte", "ball"] {
            let (size, ours) = one_frame(pattern, FACTORY, (1920, 1080), (853, 479));
            assert_eq!(size, (853, 479));
            assert_eq!((ours[1].len(), ours[2].len()), (427 * 240, 427 * 240));
            let (_, reference) = one_frame(pattern, "videoscale method=catrom add-borders=false", (1920, 1080), (853, 479));
            for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
                let db = psnr(a, b);
                assert!(db > 30.0, "{pattern} plane {i}: swscale vs videoscale catrom {db:.1} dB");
            }
        }
        // A flat picture stays exactly flat (no offset, no ringing, no border), chroma included.
        let (_, white) = one_frame("white", FACTORY, (1280, 720), (640, 360));
        assert!(white[0].iter().all(|&v| v == 235), "white luma must stay 235");
        assert!(white[1].iter().chain(&white[2]).all(|&v| v == 128), "white chroma must stay 128");
        // Upscaling works too, and the same size is passed through untouched.
        let (up, big) = one_frame("ball", FACTORY, (320, 240), (640, 480));
        let (_, big_ref) = one_frame("ball", "videoscale method=catrom add-borders=false", (320, 240), (640, 480));
        assert_eq!(up, (640, 480));
        assert!(psnr(&big[0], &big_ref[0]) > 30.0);
        let (_, same) = one_frame("smpte", FACTORY, (640, 360), (640, 360));
        let (_, direct) = one_frame("smpte", "identity", (640, 360), (640, 360));
        assert_eq!(same, direct);
    }

    #[test]
    fn rows_are_padded_only_for_consumers_that_read_strides() {
        crate::probe::init_gstreamer().unwrap();
        assert!(available());
        let head = "videotestsrc num-buffers=1 pattern=ball ! video/x-raw,format=I420,width=1280,height=720,pixel-aspect-ratio=1/1";
        let caps = "video/x-raw,width=854,height=480,pixel-aspect-ratio=1/1";
        let (tight, tight_strides) = run_strides(head, FACTORY, caps, None, false);
        let (padded, padded_strides) = run_strides(head, FACTORY, caps, None, true);
        assert_eq!(tight_strides, vec![856, 428, 428], "without the video meta, rows stay packed");
        assert!(padded_strides.iter().all(|s| (*s as u32).is_multiple_of(STRIDE_ALIGN)), "padded rows: {padded_strides:?}");
        assert_eq!(tight, padded, "padding changes only where rows start, not the picture");
        // An aligned size needs no padding.
        let (_, strides) = run_strides(head, FACTORY, "video/x-raw,width=640,height=360,pixel-aspect-ratio=1/1", None, true);
        assert_eq!(strides, vec![640, 320, 320]);
    }

    #[test]
    fn lanczos_is_close_to_bicubic_and_keeps_flat_colour() {
        crate::probe::init_gstreamer().unwrap();
        assert!(available());
        let lanczos = format!("{FACTORY} method=lanczos");
        let (size, sharp) = one_frame("ball", &lanczos, (1280, 720), (854, 480));
        let (_, soft) = one_frame("ball", FACTORY, (1280, 720), (854, 480));
        assert_eq!(size, (854, 480));
        assert_ne!(sharp, soft, "method=lanczos must be another filter");
        for (i, (a, b)) in sharp.iter().zip(&soft).enumerate() {
            let db = psnr(a, b);
            assert!(db > 30.0, "plane {i}: lanczos vs bicubic {db:.1} dB");
        }
        let (_, white) = one_frame("white", &lanczos, (1280, 720), (854, 480));
        assert!(white[0].iter().all(|&v| v == 235) && white[1].iter().chain(&white[2]).all(|&v| v == 128));
    }

    #[test]
    fn interlaced_frames_are_scaled_field_by_field() {
        crate::probe::init_gstreamer().unwrap();
        assert!(available());
        // Top field white, bottom field black: scaled per field, each stays flat; scaled as one
        // picture, the rows would blend into greys.
        let (w, h) = (640usize, 360usize);
        let mut data = vec![128u8; w * h * 3 / 2];
        for r in 0..h {
            data[r * w..(r + 1) * w].fill(if r % 2 == 0 { 235 } else { 16 });
        }
        let mut buf = gst::Buffer::from_mut_slice(data);
        {
            let b = buf.get_mut().unwrap();
            b.set_pts(gst::ClockTime::ZERO);
            b.set_flags(gst::BufferFlags::from_bits_truncate(gst_video::VideoBufferFlags::INTERLACED.bits()));
        }
        let caps = "video/x-raw,format=I420,width=640,height=360,framerate=25/1,pixel-aspect-ratio=1/1,interlace-mode=interleaved,colorimetry=bt709";
        let ((ow, oh), out) = run(
            &format!("appsrc name=in format=time caps=\"{caps}\""),
            FACTORY,
            "video/x-raw,width=320,height=180,pixel-aspect-ratio=1/1",
            Some(buf),
        );
        assert_eq!((ow, oh), (320, 180));
        for (r, row) in out[0].chunks(320).enumerate() {
            let want = if r % 2 == 0 { 235 } else { 16 };
            assert!(row.iter().all(|&v| v == want), "row {r} of the scaled frame mixes the fields: {:?}", &row[..4]);
        }
    }
}
