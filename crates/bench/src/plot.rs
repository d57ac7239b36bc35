//! A small SVG line chart for docs/benchmarks.md: one line per server, x and y from the runs'
//! JSON. Written here because a plotting crate would pull in fonts and raster backends for
//! what is forty lines of SVG.

use std::fmt::Write;

/// One line: a name, its colour, and (x, y) points in x order.
pub struct Series {
    pub name: String,
    pub colour: &'static str,
    pub points: Vec<(f64, f64)>,
}

/// An SVG chart of `series` with axis labels and a legend.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let (w, h, left, bottom, top, right) = (720.0, 420.0, 70.0, 50.0, 40.0, 150.0);
    let all = series.iter().flat_map(|s| s.points.iter());
    let x_max = nice(all.clone().map(|p| p.0).fold(1.0, f64::max));
    let y_max = nice(all.map(|p| p.1).fold(1.0, f64::max));
    let px = |x: f64| left + x / x_max * (w - left - right);
    let py = |y: f64| h - bottom - y / y_max * (h - bottom - top);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{title}</text>
"#,
        (w - right + left) / 2.0
    );
    for i in 0..=5 {
        let (xv, yv) = (x_max * i as f64 / 5.0, y_max * i as f64 / 5.0);
        let _ = writeln!(
            svg,
            r##"<line x1="{l}" x2="{r}" y1="{y}" y2="{y}" stroke="#ddd"/><text x="{tx}" y="{ty}" text-anchor="end">{yv}</text><text x="{x}" y="{bx}" text-anchor="middle">{xv}</text>"##,
            l = left,
            r = w - right,
            y = py(yv),
            tx = left - 6.0,
            ty = py(yv) + 4.0,
            x = px(xv),
            bx = h - bottom + 18.0,
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{x_label}</text><text transform="translate(18 {}) rotate(-90)" text-anchor="middle">{y_label}</text>"#,
        (w - right + left) / 2.0,
        h - 10.0,
        (h - bottom + top) / 2.0
    );
    for (i, s) in series.iter().enumerate() {
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2.5" points="{p}"/>"#,
            c = s.colour,
            p = pts.join(" ")
        );
        for &(x, y) in &s.points {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{}"/>"#,
                px(x),
                py(y),
                s.colour
            );
        }
        let ly = top + 20.0 + 22.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{a}" x2="{b}" y1="{ly}" y2="{ly}" stroke="{c}" stroke-width="3"/><text x="{t}" y="{ty}">{n}</text>"#,
            a = w - right + 15.0,
            b = w - right + 40.0,
            c = s.colour,
            t = w - right + 46.0,
            ty = ly + 4.0,
            n = s.name
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The next of 1, 2, 5 × 10^k at or above `v`, so axes end on round numbers.
fn nice(v: f64) -> f64 {
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * mag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice(37.0), 50.0);
        assert_eq!(nice(200.0), 200.0);
        assert_eq!(nice(201.0), 500.0);
        assert_eq!(nice(0.7), 1.0);
    }

    #[test]
    fn every_point_is_drawn_inside_the_plot() {
        let s = Series {
            name: "a".into(),
            colour: "red",
            points: vec![(50.0, 10.0), (100.0, 20.0)],
        };
        let svg = line_chart("t", "x", "y", &[s]);
        assert_eq!(svg.matches("<circle").count(), 2);
        // x 50 of an axis to 100 is halfway across the 500-px plot; y 10 of 20 halfway up 330 px.
        assert!(svg.contains("points=\"320.0,205.0 570.0,40.0\""), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
