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
//! colorimetry and chroma siting pass through untouched.

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

type GetContext = unsafe extern "C" fn(c_int, c_int, c_int, c_int, c_int, c_int, c_int, *mut c_void, *mut c_void, *const f64) -> *mut c_void;
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

    #[derive(Default)]
    pub struct SwScale {
        ctx: Mutex<Option<Context>>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for SwScale {
        const NAME: &'static str = "CascadeSwScale";
        type Type = super::SwScale;
        type ParentType = gst_video::VideoFilter;
    }

    impl ObjectImpl for SwScale {}
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
    }

    impl VideoFilterImpl for SwScale {
        fn set_info(&self, _incaps: &gst::Caps, in_info: &gst_video::VideoInfo, _outcaps: &gst::Caps, out_info: &gst_video::VideoInfo) -> Result<(), gst::LoggableError> {
            let api = api().map_err(|e| gst::loggable_error!(gst::CAT_RUST, "{}", e))?;
            let mut ctx = self.ctx.lock().unwrap();
            *ctx = None;
            if (in_info.width(), in_info.height()) == (out_info.width(), out_info.height()) {
                return Ok(()); // passthrough
            }
            let p = unsafe {
                (api.get_context)(
                    in_info.width() as c_int,
                    in_info.height() as c_int,
                    AV_PIX_FMT_YUV420P,
                    out_info.width() as c_int,
                    out_info.height() as c_int,
                    AV_PIX_FMT_YUV420P,
                    SWS_BICUBIC,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null(),
                )
            };
            if p.is_null() {
                return Err(gst::loggable_error!(
                    gst::CAT_RUST,
                    "sws_getContext failed for {}x{} -> {}x{}",
                    in_info.width(),
                    in_info.height(),
                    out_info.width(),
                    out_info.height()
                ));
            }
            *ctx = Some(Context(p));
            Ok(())
        }

        fn transform_frame(
            &self,
            inframe: &gst_video::VideoFrameRef<&gst::BufferRef>,
            outframe: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
        ) -> Result<gst::FlowSuccess, gst::FlowError> {
            let api = api().map_err(|_| gst::FlowError::NotNegotiated)?;
            let ctx = self.ctx.lock().unwrap();
            let Some(ctx) = ctx.as_ref() else {
                gst::element_imp_error!(self, gst::CoreError::Negotiation, ["no scaling context"]);
                return Err(gst::FlowError::NotNegotiated);
            };
            let mut src = [std::ptr::null::<u8>(); 4];
            let mut src_stride = [0 as c_int; 4];
            for i in 0..3 {
                src[i] = inframe.plane_data(i as u32).map_err(|_| gst::FlowError::Error)?.as_ptr();
                src_stride[i] = inframe.plane_stride()[i];
            }
            let out_strides = outframe.plane_stride().to_vec();
            let mut dst = [std::ptr::null_mut::<u8>(); 4];
            let mut dst_stride = [0 as c_int; 4];
            for i in 0..3 {
                dst[i] = outframe.plane_data_mut(i as u32).map_err(|_| gst::FlowError::Error)?.as_mut_ptr();
                dst_stride[i] = out_strides[i];
            }
            // SAFETY: the planes are mapped for the frames' lifetimes and laid out as the
            // negotiated I420 infos the context was made for.
            let rows = unsafe { (api.scale)(ctx.0, src.as_ptr(), src_stride.as_ptr(), 0, inframe.height() as c_int, dst.as_ptr(), dst_stride.as_ptr()) };
            if rows <= 0 {
                gst::element_imp_error!(self, gst::StreamError::Failed, ["sws_scale returned {}", rows]);
                return Err(gst::FlowError::Error);
            }
            Ok(gst::FlowSuccess::Ok)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gstreamer_app as gst_app;

    /// Runs `videotestsrc ! I420 in_w x in_h ! <scaler> ! out_w x out_h ! appsink` for one frame
    /// and returns the output's caps size and luma plane (rows packed). BT.709 on both sides, or
    /// videoscale would also convert the matrix for SD sizes.
    fn one_frame(pattern: &str, scaler: &str, (in_w, in_h): (i32, i32), (out_w, out_h): (i32, i32)) -> ((i32, i32), Vec<u8>) {
        crate::probe::init_gstreamer().unwrap();
        let desc = format!(
            "videotestsrc num-buffers=1 pattern={pattern} ! video/x-raw,format=I420,width={in_w},height={in_h},pixel-aspect-ratio=1/1,colorimetry=bt709 \
             ! {scaler} ! video/x-raw,width={out_w},height={out_h},pixel-aspect-ratio=1/1,colorimetry=bt709 ! appsink name=out sync=false"
        );
        let p = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
        let sink = p.by_name("out").unwrap().downcast::<gst_app::AppSink>().unwrap();
        p.set_state(gst::State::Playing).unwrap();
        let sample = sink.try_pull_sample(gst::ClockTime::from_seconds(20)).expect("a frame within 20 s");
        p.set_state(gst::State::Null).unwrap();
        let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(sample.buffer().unwrap(), &info).unwrap();
        let stride = frame.plane_stride()[0] as usize;
        let y = frame.plane_data(0).unwrap();
        let w = info.width() as usize;
        let luma = (0..info.height() as usize).flat_map(|r| y[r * stride..r * stride + w].iter().copied()).collect();
        ((info.width() as i32, info.height() as i32), luma)
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
        // Odd output width on purpose (chroma planes round up).
        let (size, ours) = one_frame("smpte", FACTORY, (1920, 1080), (853, 480));
        assert_eq!(size, (853, 480));
        let (_, reference) = one_frame("smpte", "videoscale method=catrom add-borders=false", (1920, 1080), (853, 480));
        let db = psnr(&ours, &reference);
        assert!(db > 30.0, "swscale vs videoscale catrom: {db:.1} dB");
        // A flat picture stays exactly flat (no offset, no ringing, no border).
        let (_, white) = one_frame("white", FACTORY, (1280, 720), (640, 360));
        assert!(white.iter().all(|&v| v == 235), "white luma must stay 235");
        // Upscaling works too, and the same size is passed through untouched.
        let (up, _) = one_frame("ball", FACTORY, (320, 240), (640, 480));
        assert_eq!(up, (640, 480));
        let (_, same) = one_frame("smpte", FACTORY, (640, 360), (640, 360));
        let (_, direct) = one_frame("smpte", "identity", (640, 360), (640, 360));
        assert_eq!(same, direct);
    }
}
