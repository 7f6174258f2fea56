//! The monitor's HTML: one template (`templates/monitor/page.html`, compiled into the binary)
//! for every page, filled with sections of text, tables, attribute lists and plots. Every
//! value is escaped by the template; the plots are SVG made here, with every text in them
//! escaped by [`escape`]. Cells made by [`Cell::for_column`] link PandaIDs, task IDs, sites
//! and users to their pages, so every page links the same way.

use askama::Template;
use panda_core::Value;

/// The pages in the header, in order.
pub const NAV: &[(&str, &str)] = &[
    ("Jobs", "/jobs/"),
    ("Tasks", "/tasks/"),
    ("Errors", "/errors/"),
    ("Dash", "/dash/"),
    ("Sites", "/sites/"),
    ("Workers", "/harvester/workers/"),
];

#[derive(Template)]
#[template(path = "monitor/page.html")]
pub struct Page {
    pub title: String,
    /// The header link of this page (`/jobs/`), for `aria-current`.
    pub current: &'static str,
    pub nav: &'static [(&'static str, &'static str)],
    pub sections: Vec<Section>,
}

impl Page {
    pub fn new(title: impl Into<String>, current: &'static str) -> Page {
        Page {
            title: title.into(),
            current,
            nav: NAV,
            sections: Vec::new(),
        }
    }

    /// Whether a header link is this page's.
    pub fn is_current(&self, href: &str) -> bool {
        href == self.current
    }

    pub fn section(&mut self, heading: &str, body: Body) -> &mut Page {
        self.sections.push(Section {
            anchor: heading.to_ascii_lowercase().replace(' ', "-"),
            heading: heading.to_string(),
            body,
        });
        self
    }
}

pub struct Section {
    pub heading: String,
    pub anchor: String,
    pub body: Body,
}

pub enum Body {
    Text(String),
    Error(String),
    /// Links in a row: (label, href).
    Links(Vec<(String, String)>),
    Pre(String),
    /// Attribute and value, one per row.
    Pairs(Vec<(String, Cell)>),
    Table(Table),
    Plot(Plot),
}

#[derive(Default)]
pub struct Table {
    pub headers: Vec<Header>,
    pub rows: Vec<Vec<Cell>>,
    pub note: String,
}

impl Table {
    pub fn with_headers(labels: &[&str]) -> Table {
        Table {
            headers: labels.iter().map(|l| Header::plain(l)).collect(),
            ..Table::default()
        }
    }
}

pub struct Header {
    pub label: String,
    /// A link that sorts by this column.
    pub href: Option<String>,
}

impl Header {
    pub fn plain(label: &str) -> Header {
        Header {
            label: label.to_string(),
            href: None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cell {
    pub text: String,
    pub href: Option<String>,
    /// A CSS class: `num` for numbers, `state-<status>` for states.
    pub class: String,
}

/// Percent-encodes a path segment or query value.
pub fn encode(text: &str) -> String {
    crate::url::percent_encode(text, false)
}

impl Cell {
    pub fn text(text: impl Into<String>) -> Cell {
        Cell {
            text: text.into(),
            ..Cell::default()
        }
    }

    pub fn number(n: i64) -> Cell {
        Cell {
            text: n.to_string(),
            class: "num".into(),
            ..Cell::default()
        }
    }

    pub fn link(text: impl Into<String>, href: String) -> Cell {
        Cell {
            text: text.into(),
            href: Some(href),
            ..Cell::default()
        }
    }

    pub fn job(panda_id: i64) -> Cell {
        Cell::link(panda_id.to_string(), format!("/job/{panda_id}/"))
    }

    pub fn task(task_id: i64) -> Cell {
        Cell::link(task_id.to_string(), format!("/task/{task_id}/"))
    }

    pub fn state(status: &str) -> Cell {
        Cell {
            text: status.to_string(),
            class: format!(
                "state-{}",
                status.replace(|c: char| !c.is_ascii_alphanumeric(), "")
            ),
            ..Cell::default()
        }
    }

    /// A value of a named column, linked to its page when it names a job, task, site or
    /// user.
    pub fn for_column(column: &str, value: &Value) -> Cell {
        if value.is_null() {
            return Cell::default();
        }
        let text = value.render();
        match column {
            "pandaid" | "parentid" => value
                .as_i64()
                .map(Cell::job)
                .unwrap_or_else(|| Cell::text(text)),
            "jeditaskid" | "taskid" => value
                .as_i64()
                .filter(|id| *id > 0)
                .map(Cell::task)
                .unwrap_or_else(|| Cell::text(text)),
            "computingsite" | "queuename" => {
                let href = format!("/site/{}/", encode(&text));
                Cell::link(text, href)
            }
            "produsername" | "username" => {
                let href = format!("/user/{}/", encode(&text));
                Cell::link(text, href)
            }
            "jobstatus" | "status" | "superstatus" => Cell::state(&text),
            _ => match value {
                Value::Int(Some(_)) | Value::Float(Some(_)) => Cell {
                    text,
                    class: "num".into(),
                    href: None,
                },
                _ => Cell::text(text),
            },
        }
    }
}

/// A plot: SVG made by [`stacked_bars`] and a caption.
pub struct Plot {
    pub svg: String,
    pub caption: String,
}

/// Escapes text for XML (SVG text and attributes).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Colours of the states a plot shows.
fn colour(status: &str) -> &'static str {
    match status {
        "finished" | "done" => "#2e9e4f",
        "failed" => "#d2433a",
        "cancelled" => "#e0a400",
        "closed" => "#8c6bb1",
        "running" => "#3b7dd8",
        _ => "#7f8c9a",
    }
}

/// A stacked bar chart of counts by bucket and series (`(bucket label, series, count)`,
/// buckets in order), with a title for screen readers. Text in it is escaped.
pub fn stacked_bars(title: &str, buckets: &[String], points: &[(usize, String, i64)]) -> String {
    const WIDTH: f64 = 720.0;
    const HEIGHT: f64 = 220.0;
    const LEFT: f64 = 48.0;
    const BOTTOM: f64 = 36.0;
    const TOP: f64 = 12.0;
    let mut series: Vec<&str> = Vec::new();
    for (_, s, _) in points {
        if !series.contains(&s.as_str()) {
            series.push(s);
        }
    }
    let mut totals = vec![0i64; buckets.len()];
    for (b, _, n) in points {
        if let Some(t) = totals.get_mut(*b) {
            *t += n;
        }
    }
    let max = totals.iter().copied().max().unwrap_or(0).max(1) as f64;
    let plot_h = HEIGHT - BOTTOM - TOP;
    let slot = (WIDTH - LEFT - 8.0) / buckets.len().max(1) as f64;
    let bar = (slot * 0.8).max(1.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" viewBox=\"0 0 {WIDTH} {h}\" \
         width=\"{WIDTH}\" height=\"{h}\" aria-label=\"{t}\"><title>{t}</title>",
        h = HEIGHT + 20.0,
        t = escape(title)
    );
    svg.push_str(&format!(
        "<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{y}\" stroke=\"#888\"/>\
         <line x1=\"{LEFT}\" y1=\"{y}\" x2=\"{WIDTH}\" y2=\"{y}\" stroke=\"#888\"/>\
         <text x=\"{tx}\" y=\"{ty}\" font-size=\"11\" text-anchor=\"end\">{max}</text>\
         <text x=\"{tx}\" y=\"{y}\" font-size=\"11\" text-anchor=\"end\">0</text>",
        y = TOP + plot_h,
        tx = LEFT - 4.0,
        ty = TOP + 10.0,
        max = max as i64
    ));
    let mut heights = vec![0f64; buckets.len()];
    for (b, s, n) in points {
        let Some(base) = heights.get_mut(*b) else {
            continue;
        };
        let h = *n as f64 / max * plot_h;
        let x = LEFT + 4.0 + *b as f64 * slot;
        let y = TOP + plot_h - *base - h;
        svg.push_str(&format!(
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\" fill=\"{}\">\
             <title>{} {}: {n}</title></rect>",
            colour(s),
            escape(&buckets[*b]),
            escape(s)
        ));
        *base += h;
    }
    // Every few buckets a label, so they do not overlap.
    let every = (buckets.len() / 8).max(1);
    for (i, label) in buckets.iter().enumerate().step_by(every) {
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{}</text>",
            LEFT + 4.0 + i as f64 * slot,
            TOP + plot_h + 14.0,
            escape(label)
        ));
    }
    for (i, s) in series.iter().enumerate() {
        let x = LEFT + i as f64 * 110.0;
        svg.push_str(&format!(
            "<rect x=\"{x}\" y=\"{y}\" width=\"10\" height=\"10\" fill=\"{}\"/>\
             <text x=\"{tx}\" y=\"{ty}\" font-size=\"11\">{}</text>",
            colour(s),
            escape(s),
            y = HEIGHT + 2.0,
            tx = x + 14.0,
            ty = HEIGHT + 11.0
        ));
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_in_a_page_and_in_a_plot_is_escaped() {
        let mut page = Page::new("<script>x</script>", "/jobs/");
        page.section(
            "Jobs",
            Body::Pairs(vec![(
                "diag".into(),
                Cell::text("<img src=x onerror=alert(1)>"),
            )]),
        );
        let html = page.render().expect("render");
        assert!(!html.contains("<script>x"), "{html}");
        assert!(!html.contains("<img src=x"), "{html}");
        let svg = stacked_bars(
            "a <b>",
            &["<h>".to_string()],
            &[(0, "fin\"ished".to_string(), 3)],
        );
        assert!(!svg.contains("<b>") && !svg.contains("<h>") && !svg.contains("fin\"ished"));
    }

    #[test]
    fn ids_sites_and_users_link_to_their_pages() {
        assert_eq!(
            Cell::for_column("pandaid", &Value::Int(Some(42)))
                .href
                .as_deref(),
            Some("/job/42/")
        );
        assert_eq!(
            Cell::for_column("jeditaskid", &Value::Int(Some(7)))
                .href
                .as_deref(),
            Some("/task/7/")
        );
        assert_eq!(
            Cell::for_column("computingsite", &Value::Text(Some("A B/C".into())))
                .href
                .as_deref(),
            Some("/site/A%20B%2FC/")
        );
    }
}
