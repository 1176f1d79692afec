//! The loss-curve SVG: well-formed XML, one polyline per series with one
//! vertex per finite point, round tick labels, and no panic on odd input.

use kinglet_trainer::plot::{loss_curve_svg, write_loss_svg, LossPoint};
use quick_xml::events::Event;
use quick_xml::Reader;

/// One element of the parsed document, in document order.
#[derive(Debug)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    text: String,
}

impl Element {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses `svg` with a real XML parser, checking that every start tag is
/// closed by its own end tag and that the one root is `<svg>`.
fn parse(svg: &str) -> Vec<Element> {
    let mut reader = Reader::from_str(svg);
    let mut elements = Vec::new();
    let mut open: Vec<(String, usize)> = Vec::new(); // (name, index in elements)
    let mut roots = 0;
    loop {
        let event = reader.read_event().expect("well-formed XML");
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                if open.is_empty() {
                    roots += 1;
                }
                let name = String::from_utf8(e.name().as_ref().to_vec()).expect("utf-8 name");
                let attrs = e
                    .attributes()
                    .map(|a| {
                        let a = a.expect("well-formed attribute");
                        let key = String::from_utf8(a.key.as_ref().to_vec()).expect("utf-8 key");
                        let value = a.unescape_value().expect("escaped value").into_owned();
                        (key, value)
                    })
                    .collect();
                elements.push(Element {
                    name: name.clone(),
                    attrs,
                    text: String::new(),
                });
                if matches!(event, Event::Start(_)) {
                    open.push((name, elements.len() - 1));
                }
            }
            Event::End(e) => {
                let name = String::from_utf8(e.name().as_ref().to_vec()).expect("utf-8 name");
                let (expected, _) = open.pop().expect("end tag without a start tag");
                assert_eq!(name, expected, "mismatched end tag");
            }
            Event::Text(t) => {
                let text = t.unescape().expect("escaped text");
                match open.last() {
                    Some(&(_, index)) => elements[index].text.push_str(&text),
                    None => assert!(text.trim().is_empty(), "text outside the root: {text:?}"),
                }
            }
            Event::Eof => break,
            other => panic!("unexpected XML event {other:?}"),
        }
    }
    assert!(open.is_empty(), "unclosed elements: {open:?}");
    assert_eq!(roots, 1, "exactly one root element");
    assert_eq!(elements[0].name, "svg");
    elements
}

fn by_class<'a>(elements: &'a [Element], class: &str) -> Vec<&'a Element> {
    elements
        .iter()
        .filter(|e| e.attr("class") == Some(class))
        .collect()
}

/// The vertices of a polyline, as pixel coordinates.
fn vertices(polyline: &Element) -> Vec<(f64, f64)> {
    polyline
        .attr("points")
        .expect("points attribute")
        .split_whitespace()
        .map(|pair| {
            let (x, y) = pair.split_once(',').expect("x,y pair");
            (
                x.parse().expect("x is a number"),
                y.parse().expect("y is a number"),
            )
        })
        .collect()
}

fn labels(elements: &[Element], class: &str) -> Vec<String> {
    by_class(elements, class)
        .iter()
        .map(|e| e.text.clone())
        .collect()
}

/// A typical run: 1001 steps, loss falling from about 4.2 to 1.9, val every 100.
fn typical_run() -> Vec<LossPoint> {
    (0..=1000u64)
        .map(|step| {
            let t = step as f32 / 1000.0;
            let train = 1.9 + 2.3 * (-5.0 * t).exp() + 0.05 * ((step * 7919) % 13) as f32 / 13.0;
            LossPoint {
                step,
                train_loss: train,
                val_loss: (step % 100 == 0).then_some(train + 0.08),
            }
        })
        .collect()
}

#[test]
fn typical_run_has_both_series_and_round_ticks() {
    let svg = loss_curve_svg(&typical_run(), "seed preset");
    let elements = parse(&svg);

    let train = by_class(&elements, "train");
    let val = by_class(&elements, "val");
    assert_eq!(train.len(), 1);
    assert_eq!(val.len(), 1);
    assert_eq!(train[0].name, "polyline");
    assert_eq!(val[0].name, "polyline");
    let train_vertices = vertices(train[0]);
    assert_eq!(train_vertices.len(), 1001);
    assert_eq!(vertices(val[0]).len(), 11);
    let markers = by_class(&elements, "val-markers");
    assert_eq!(markers.len(), 1);
    let marker_count = elements.iter().filter(|e| e.name == "circle").count();
    assert_eq!(
        marker_count,
        11 + 1,
        "one marker per val point, one in the legend"
    );

    // Steps grow left to right, and the falling loss goes down the picture
    // (SVG y grows downwards).
    assert!(train_vertices.windows(2).all(|w| w[1].0 > w[0].0));
    assert!(train_vertices[0].1 < train_vertices[1000].1);
    // Everything sits inside the canvas.
    for &(x, y) in &train_vertices {
        assert!((0.0..=800.0).contains(&x) && (0.0..=480.0).contains(&y));
    }

    assert_eq!(
        labels(&elements, "xtick"),
        ["0", "200", "400", "600", "800", "1000"]
    );
    assert_eq!(
        labels(&elements, "ytick"),
        ["1.5", "2.0", "2.5", "3.0", "3.5", "4.0", "4.5"]
    );
    assert!(elements.iter().any(|e| e.text == "seed preset"));
    assert!(elements.iter().any(|e| e.text == "train loss"));
    assert!(elements.iter().any(|e| e.text == "val loss"));
    assert!(elements.iter().any(|e| e.text == "step"));
    assert!(elements.iter().any(|e| e.text == "loss"));
}

#[test]
fn nan_and_infinite_values_are_skipped() {
    let mut points = typical_run();
    points[10].train_loss = f32::NAN;
    points[20].train_loss = f32::INFINITY;
    points[100].val_loss = Some(f32::NAN);
    points[200].val_loss = Some(f32::NEG_INFINITY);
    let svg = loss_curve_svg(&points, "with holes");
    assert!(
        !svg.contains("NaN") && !svg.contains("inf"),
        "no non-finite number printed"
    );
    let elements = parse(&svg);
    assert_eq!(vertices(by_class(&elements, "train")[0]).len(), 999);
    assert_eq!(vertices(by_class(&elements, "val")[0]).len(), 9);
}

#[test]
fn no_points_gives_empty_axes() {
    let elements = parse(&loss_curve_svg(&[], "empty"));
    assert!(by_class(&elements, "train").is_empty());
    assert!(by_class(&elements, "val").is_empty());
    assert!(elements.iter().any(|e| e.text == "no data"));
    assert!(!labels(&elements, "xtick").is_empty());

    let all_nan = [LossPoint {
        step: 3,
        train_loss: f32::NAN,
        val_loss: None,
    }];
    let elements = parse(&loss_curve_svg(&all_nan, "all NaN"));
    assert!(elements.iter().any(|e| e.text == "no data"));
}

#[test]
fn one_point_is_visible_and_centred() {
    let one = [LossPoint {
        step: 5000,
        train_loss: 2.5,
        val_loss: Some(2.6),
    }];
    let svg = loss_curve_svg(&one, "one");
    assert!(!svg.contains("NaN"));
    let elements = parse(&svg);
    assert_eq!(vertices(by_class(&elements, "train")[0]).len(), 1);
    assert_eq!(vertices(by_class(&elements, "val")[0]).len(), 1);
    // A one-vertex polyline draws nothing, so the train point gets a marker.
    assert_eq!(by_class(&elements, "train-marker").len(), 1);
    assert_eq!(
        labels(&elements, "xtick").first().map(String::as_str),
        Some("0")
    );
    assert_eq!(
        labels(&elements, "xtick").last().map(String::as_str),
        Some("10k")
    );
}

#[test]
fn huge_step_counts_get_short_labels() {
    let points: Vec<LossPoint> = (0..50u64)
        .map(|i| LossPoint {
            step: i * 200_000_000,
            train_loss: 3.0 - i as f32 * 0.01,
            val_loss: None,
        })
        .collect();
    let elements = parse(&loss_curve_svg(&points, "long run"));
    assert_eq!(
        labels(&elements, "xtick"),
        ["0", "2G", "4G", "6G", "8G", "10G"]
    );
    assert_eq!(vertices(by_class(&elements, "train")[0]).len(), 50);

    let extreme = [
        LossPoint {
            step: 0,
            train_loss: 1.0,
            val_loss: None,
        },
        LossPoint {
            step: u64::MAX,
            train_loss: f32::MAX,
            val_loss: Some(f32::MIN_POSITIVE),
        },
    ];
    let svg = loss_curve_svg(&extreme, "extreme");
    assert!(!svg.contains("NaN") && !svg.contains("inf"));
    parse(&svg);
    let same_step = [
        LossPoint {
            step: u64::MAX,
            train_loss: 1.0,
            val_loss: None,
        },
        LossPoint {
            step: u64::MAX,
            train_loss: 1.0,
            val_loss: None,
        },
    ];
    let svg = loss_curve_svg(&same_step, "same step");
    assert!(!svg.contains("NaN") && !svg.contains("inf"));
    parse(&svg);
}

#[test]
fn title_is_escaped() {
    let title = "lr<1e-3 & \"seed\" 'preset' \u{1}";
    let elements = parse(&loss_curve_svg(&typical_run(), title));
    assert!(elements
        .iter()
        .any(|e| e.text == "lr<1e-3 & \"seed\" 'preset'  "));
}

#[test]
fn write_is_atomic_and_leaves_no_temp() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("plot-write");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");
    let path = dir.join("loss.svg");
    std::fs::write(&path, "old").expect("seed an old file");
    write_loss_svg(&path, &typical_run(), "written").expect("write svg");
    let written = std::fs::read_to_string(&path).expect("read svg");
    assert_eq!(written, loss_curve_svg(&typical_run(), "written"));
    let names: Vec<_> = std::fs::read_dir(&dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["loss.svg"]);

    // Into a missing directory: an error, not a panic.
    let missing = dir.join("no/such/dir/loss.svg");
    assert!(write_loss_svg(&missing, &typical_run(), "x").is_err());
}
