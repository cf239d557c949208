//! The plots' edge cases (nothing to draw, degenerate ranges, values a log axis cannot
//! show, unwritable output) and labels.

use super::*;

use std::path::PathBuf;

fn out(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("estate-plot-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn point(system: &str, instances: usize, pps: f64, delay: Option<f64>) -> Fig5Point {
    Fig5Point {
        system: system.to_string(),
        instances,
        pps_per_instance: pps,
        pps_overall: pps * instances as f64,
        global_delay_ms: delay,
    }
}

#[test]
fn empty_input_is_an_error() {
    let e = fig4(&[], &out("empty4.png")).unwrap_err();
    assert!(e.contains("nothing to draw"), "{e}");
    let no_samples = Fig4Series { case: "scale-out".into(), system: "estate".into(), move_at_s: 1.0, samples: vec![] };
    assert!(fig4(&[no_samples], &out("empty4b.png")).unwrap_err().contains("nothing to draw"));
    assert!(fig5(&[], &out("empty5.png")).unwrap_err().contains("nothing to draw"));
}

#[test]
fn single_instance_count_and_bad_values() {
    let points = vec![
        point("baseline", 4, 5000.0, None),
        point("estate", 4, 0.0, Some(-1.0)),
        point("centralmem", 4, f64::NAN, Some(f64::NAN)),
        point("clustermem", 4, -3.0, Some(0.0)),
    ];
    fig5(&points, &out("single5.png")).unwrap();
    // Nothing drawable at all still gives a (labelled, empty) figure.
    fig5(&[point("estate", 1, 0.0, None)], &out("nothing5.png")).unwrap();
}

#[test]
fn fig4_degenerate_series() {
    let sample = |t_s: f64, pps: f64| Fig4Sample { t_s, matches: [3, -2], pps };
    let series = vec![
        Fig4Series {
            case: "scale-in".into(),
            system: "estate".into(),
            move_at_s: 5.0,
            samples: vec![sample(5.0, 1.0)],
        },
        Fig4Series {
            case: "scale-in".into(),
            system: "baseline".into(),
            move_at_s: f64::NAN,
            samples: vec![sample(f64::NAN, 2.0), sample(1.0, f64::INFINITY), sample(2.0, -5.0)],
        },
    ];
    fig4(&series, &out("degenerate4.png")).unwrap();
}

#[test]
fn unwritable_output_is_an_error() {
    let points = vec![point("estate", 2, 100.0, Some(1.0))];
    assert!(fig5(&points, &PathBuf::from("/nonexistent-dir/x/fig5.png")).is_err());
}

#[test]
fn labels() {
    assert_eq!(number_label(1500.0), "1.5k");
    assert_eq!(number_label(2e6), "2M");
    assert_eq!(number_label(0.25), "0.25");
    assert_eq!(number_label(0.0), "0");
    assert_eq!(integer_label(4.0), "4");
    assert_eq!(integer_label(4.5), "");
    assert_eq!(integer_label(-0.0), "0");
}

#[test]
fn ranges_are_valid() {
    let r = padded(Some((8.0, 8.0)), 0.5);
    assert!(r.start < r.end);
    let r = padded(None, 0.0);
    assert!(r.start < r.end);
    assert_eq!(y_data_range(Scale::Log, &[]), (0.0, 1.0));
}
