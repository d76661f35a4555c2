//! The DASH MPD over the CMAF segments, written with dash-mpd's typed structs.

use std::time::Duration;

use chrono::{DateTime, Utc};
use dash_mpd::{
    AdaptationSet, Latency, Period, PlaybackRate, Representation, SegmentTemplate, SegmentTimeline, ServiceDescription, UTCTiming, MPD, S,
};

/// Timescale of the SegmentTimeline (milliseconds).
pub const TIMESCALE: u64 = 1000;

/// One CMAF segment: start and duration in `TIMESCALE` units.
#[derive(Debug, Clone, PartialEq)]
pub struct DashSegment {
    pub number: u64,
    pub t: u64,
    pub d: u64,
    pub bytes: u64,
}

/// One representation (a video rung or the audio track).
#[derive(Debug, Clone)]
pub struct DashRep {
    pub id: String,
    pub bandwidth: u64,
    pub codecs: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub frame_rate: Option<String>,
    pub audio_sample_rate: Option<u32>,
    pub segments: Vec<DashSegment>,
}

/// How the MPD presents itself.
#[derive(Debug, Clone)]
pub enum Presentation {
    /// Still encoding: `type="dynamic"`; every listed segment is available.
    Dynamic { availability_start: DateTime<Utc>, window: Duration, update_seconds: u32, utc_timing_url: String },
    /// Finished: `type="static"` with the real duration.
    Static { duration: Duration },
    /// Low-latency DASH of a broadcast on air: segments addressed by number
    /// (`SegmentTemplate@duration`, segment N is media [N·d, (N+1)·d), whose wall-clock time is
    /// `availability_start` + media time), each announced from its first chunk on
    /// (`availabilityTimeOffset` = d − chunk, `availabilityTimeComplete="false"`) and served
    /// while it is written; a `ServiceDescription` with the target latency.
    LowLatency {
        availability_start: DateTime<Utc>,
        window: Duration,
        segment_s: f64,
        chunk_s: f64,
        target_latency_s: f64,
        utc_timing_url: String,
    },
}

fn timeline(segments: &[DashSegment]) -> SegmentTimeline {
    // Consecutive segments of equal duration collapse into one `S` with a repeat count.
    let mut out: Vec<S> = Vec::new();
    let mut expected_t: Option<u64> = None;
    for s in segments {
        let contiguous = expected_t == Some(s.t);
        match out.last_mut() {
            Some(last) if contiguous && last.d == s.d => last.r = Some(last.r.unwrap_or(0) + 1),
            _ => out.push(S { t: if contiguous { None } else { Some(s.t) }, d: s.d, ..Default::default() }),
        }
        expected_t = Some(s.t + s.d);
    }
    SegmentTimeline { segments: out }
}

fn representation(rep: &DashRep, presentation: &Presentation) -> Representation {
    let start = rep.segments.first().map(|s| s.number).unwrap_or(0);
    let template = match presentation {
        Presentation::LowLatency { segment_s, chunk_s, .. } => SegmentTemplate {
            startNumber: Some(0),
            duration: Some((segment_s * TIMESCALE as f64).round()),
            availabilityTimeOffset: Some(((segment_s - chunk_s) * 1000.0).floor() / 1000.0),
            availabilityTimeComplete: Some(false),
            ..Default::default()
        },
        _ => SegmentTemplate { startNumber: Some(start), SegmentTimeline: Some(timeline(&rep.segments)), ..Default::default() },
    };
    Representation {
        id: Some(rep.id.clone()),
        bandwidth: Some(rep.bandwidth),
        codecs: Some(rep.codecs.clone()),
        width: rep.width.map(u64::from),
        height: rep.height.map(u64::from),
        frameRate: rep.frame_rate.clone(),
        audioSamplingRate: rep.audio_sample_rate.map(|r| r.to_string()),
        SegmentTemplate: Some(SegmentTemplate {
            initialization: Some(format!("{}/{}", rep.id, super::DASH_INIT)),
            media: Some(format!("{}/seg$Number%05d$.m4s", rep.id)),
            timescale: Some(TIMESCALE),
            ..template
        }),
        ..Default::default()
    }
}

/// Renders the MPD for a video track set and an optional audio track.
pub fn mpd(video: &[DashRep], audio: Option<&DashRep>, presentation: &Presentation, min_buffer_s: u32) -> String {
    let mut sets = vec![AdaptationSet {
        id: Some("0".into()),
        contentType: Some("video".into()),
        mimeType: Some("video/mp4".into()),
        segmentAlignment: Some(true),
        startWithSAP: Some(1),
        maxWidth: video.iter().filter_map(|r| r.width).max().map(u64::from),
        maxHeight: video.iter().filter_map(|r| r.height).max().map(u64::from),
        representations: video.iter().map(|r| representation(r, presentation)).collect(),
        ..Default::default()
    }];
    if let Some(a) = audio {
        sets.push(AdaptationSet {
            id: Some("1".into()),
            contentType: Some("audio".into()),
            mimeType: Some("audio/mp4".into()),
            lang: Some("und".into()),
            segmentAlignment: Some(true),
            startWithSAP: Some(1),
            representations: vec![representation(a, presentation)],
            ..Default::default()
        });
    }
    let period = Period { id: Some("0".into()), start: Some(Duration::ZERO), adaptations: sets, ..Default::default() };
    let base = MPD {
        xmlns: Some("urn:mpeg:dash:schema:mpd:2011".into()),
        profiles: Some("urn:mpeg:dash:profile:isoff-live:2011".into()),
        minBufferTime: Some(Duration::from_secs(min_buffer_s as u64)),
        periods: vec![period],
        ..Default::default()
    };
    let mpd = match presentation {
        Presentation::Static { duration } => MPD { mpdtype: Some("static".into()), mediaPresentationDuration: Some(*duration), ..base },
        Presentation::Dynamic { availability_start, window, update_seconds, utc_timing_url } => MPD {
            mpdtype: Some("dynamic".into()),
            availabilityStartTime: Some(*availability_start),
            publishTime: Some(Utc::now()),
            minimumUpdatePeriod: Some(Duration::from_secs(*update_seconds as u64)),
            timeShiftBufferDepth: Some(*window),
            UTCTiming: vec![utc_timing(utc_timing_url)],
            ..base
        },
        Presentation::LowLatency { availability_start, window, target_latency_s, utc_timing_url, .. } => MPD {
            mpdtype: Some("dynamic".into()),
            availabilityStartTime: Some(*availability_start),
            publishTime: Some(Utc::now()),
            // Segments are addressed by number: the MPD changes only when a rung is dropped or
            // the broadcast ends.
            minimumUpdatePeriod: Some(Duration::from_secs(2)),
            timeShiftBufferDepth: Some(*window),
            ServiceDescription: vec![ServiceDescription {
                id: Some("0".into()),
                Latency: Some(Latency {
                    target: Some((target_latency_s * 1000.0).round()),
                    min: Some((target_latency_s * 500.0).round()),
                    max: Some((target_latency_s * 2000.0).round()),
                    referenceId: Some("0".into()),
                }),
                PlaybackRate: Some(PlaybackRate { min: 0.95, max: 1.05 }),
                ..Default::default()
            }],
            UTCTiming: vec![utc_timing(utc_timing_url)],
            ..base
        },
    };
    mpd.to_string()
}

fn utc_timing(url: &str) -> UTCTiming {
    UTCTiming { schemeIdUri: "urn:mpeg:dash:utc:http-iso:2014".into(), value: Some(url.to_string()), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(id: &str, n: usize) -> DashRep {
        DashRep {
            id: id.into(),
            bandwidth: 1_000_000,
            codecs: "avc1.64001f".into(),
            width: Some(640),
            height: Some(360),
            frame_rate: Some("30".into()),
            audio_sample_rate: None,
            segments: (0..n as u64)
                .map(|i| DashSegment { number: i, t: i * 4000, d: if i + 1 == n as u64 { 1500 } else { 4000 }, bytes: 10 })
                .collect(),
        }
    }

    #[test]
    fn static_mpd_parses_back_with_timeline() {
        let text = mpd(&[rep("360p", 3)], Some(&rep("audio", 3)), &Presentation::Static { duration: Duration::from_millis(9500) }, 2);
        let parsed = dash_mpd::parse(&text).expect(&text);
        assert_eq!(parsed.mpdtype.as_deref(), Some("static"));
        assert_eq!(parsed.mediaPresentationDuration, Some(Duration::from_millis(9500)));
        let set = &parsed.periods[0].adaptations[0];
        let st = set.representations[0].SegmentTemplate.as_ref().unwrap();
        let tl = &st.SegmentTimeline.as_ref().unwrap().segments;
        assert_eq!(tl.len(), 2, "{text}");
        assert_eq!((tl[0].t, tl[0].d, tl[0].r), (Some(0), 4000, Some(1)));
        assert_eq!(tl[1].d, 1500);
        assert_eq!(parsed.periods[0].adaptations.len(), 2);
    }

    #[test]
    fn dynamic_mpd_has_utc_timing() {
        let p = Presentation::Dynamic {
            availability_start: Utc::now(),
            window: Duration::from_secs(600),
            update_seconds: 2,
            utc_timing_url: "/api/time".into(),
        };
        let text = mpd(&[rep("360p", 1)], None, &p, 2);
        let parsed = dash_mpd::parse(&text).unwrap();
        assert_eq!(parsed.mpdtype.as_deref(), Some("dynamic"));
        assert_eq!(parsed.UTCTiming[0].value.as_deref(), Some("/api/time"));
        assert!(parsed.availabilityStartTime.is_some());
    }
}
