//! Content negotiation for index pages (pure): the PEP 691 format from
//! `?format=` and `Accept` (q-values, wildcards, `latest`), and the content
//! coding from `Accept-Encoding` (gzip, deflate, identity).

/// The serialisation of a page roxpi sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageFormat {
    Html,
    Json,
}

impl PageFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            PageFormat::Html => "text/html; charset=utf-8",
            PageFormat::Json => "application/vnd.pypi.simple.v1+json",
        }
    }
}

/// A content coding for index pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Coding {
    Identity,
    Gzip,
    Deflate,
}

impl Coding {
    pub fn header_value(self) -> Option<&'static str> {
        match self {
            Coding::Identity => None,
            Coding::Gzip => Some("gzip"),
            Coding::Deflate => Some("deflate"),
        }
    }
}

const V1_JSON: &str = "application/vnd.pypi.simple.v1+json";
const LATEST_JSON: &str = "application/vnd.pypi.simple.latest+json";
const V1_HTML: &str = "application/vnd.pypi.simple.v1+html";
const LATEST_HTML: &str = "application/vnd.pypi.simple.latest+html";
const TEXT_HTML: &str = "text/html";

/// One entry of an `Accept`-like header: a value and its q (0..=1000).
struct Range<'a> {
    value: &'a str,
    q: u16,
}

/// Parses a comma-separated header with `;q=` weights. Bad q-values count
/// as q=0 (RFC 9110 says ignore the element; refusing is safer than
/// guessing a weight).
fn ranges(header: &str) -> Vec<Range<'_>> {
    header
        .split(',')
        .filter_map(|item| {
            let mut parts = item.split(';');
            let value = parts.next()?.trim();
            if value.is_empty() {
                return None;
            }
            let mut q = 1000;
            for p in parts {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                if k.trim().eq_ignore_ascii_case("q") {
                    q = parse_q(v.trim()).unwrap_or(0);
                }
            }
            Some(Range { value, q })
        })
        .collect()
}

/// `0`, `1`, `0.5`, `0.125`, `1.000` → thousandths.
fn parse_q(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The q of a media type under the most specific matching range.
fn media_q(ranges: &[Range<'_>], media: &str) -> u16 {
    let (ty, _) = media.split_once('/').unwrap_or((media, ""));
    let mut best: Option<(u8, u16)> = None;
    for r in ranges {
        let v = r.value;
        let specificity = if v.eq_ignore_ascii_case(media) {
            3
        } else if v.len() == ty.len() + 2
            && v.ends_with("/*")
            && v[..ty.len()].eq_ignore_ascii_case(ty)
        {
            2
        } else if v == "*/*" {
            1
        } else {
            continue;
        };
        if best.is_none_or(|(s, _)| specificity > s) {
            best = Some((specificity, r.q));
        }
    }
    best.map(|(_, q)| q).unwrap_or(0)
}

/// The last answer for one header value, per thread: an installer sends
/// the same `Accept` and `Accept-Encoding` on every request, so a warm page
/// compares two strings instead of parsing both headers (2.5 % of a warm
/// page's time, part 15).
fn memo<T: Copy + 'static>(
    cell: &'static std::thread::LocalKey<std::cell::RefCell<(String, Option<T>)>>,
    header: &str,
    decide: impl FnOnce() -> Option<T>,
) -> Option<T> {
    if header.len() > 512 {
        return decide();
    }
    cell.with(|c| {
        let Ok(mut last) = c.try_borrow_mut() else {
            return decide();
        };
        if last.0 != header || last.0.is_empty() {
            let answer = decide();
            last.0.clear();
            last.0.push_str(header);
            last.1 = answer;
        }
        last.1
    })
}

thread_local! {
    static LAST_ACCEPT: std::cell::RefCell<(String, Option<PageFormat>)> =
        const { std::cell::RefCell::new((String::new(), None)) };
    static LAST_ACCEPT_ENCODING: std::cell::RefCell<(String, Option<Coding>)> =
        const { std::cell::RefCell::new((String::new(), None)) };
}

/// Chooses the page format; `None` means 406. `format` is the `?format=`
/// value, which wins when it names a known type.
pub fn negotiate_format(format: Option<&str>, accept: Option<&str>) -> Option<PageFormat> {
    match (format, accept) {
        (None, Some(accept)) => memo(&LAST_ACCEPT, accept, || decide_format(None, Some(accept))),
        _ => decide_format(format, accept),
    }
}

/// Chooses the coding; `None` means 406 (identity refused, nothing else
/// acceptable). gzip wins ties.
pub fn negotiate_coding(accept_encoding: Option<&str>) -> Option<Coding> {
    match accept_encoding {
        Some(header) => memo(&LAST_ACCEPT_ENCODING, header, || {
            decide_coding(Some(header))
        }),
        None => decide_coding(None),
    }
}

fn decide_format(format: Option<&str>, accept: Option<&str>) -> Option<PageFormat> {
    if let Some(f) = format {
        match f.trim() {
            V1_JSON | LATEST_JSON => return Some(PageFormat::Json),
            TEXT_HTML | V1_HTML | LATEST_HTML => return Some(PageFormat::Html),
            _ => {}
        }
    }
    let accept = accept.filter(|a| !a.trim().is_empty()).unwrap_or("*/*");
    let ranges = ranges(accept);
    let json = media_q(&ranges, V1_JSON).max(media_q(&ranges, LATEST_JSON));
    let text_html = media_q(&ranges, TEXT_HTML);
    let html = text_html
        .max(media_q(&ranges, V1_HTML))
        .max(media_q(&ranges, LATEST_HTML));
    if json > 0 && json >= html && json > text_html {
        Some(PageFormat::Json)
    } else if html > 0 {
        Some(PageFormat::Html)
    } else {
        None
    }
}

fn decide_coding(accept_encoding: Option<&str>) -> Option<Coding> {
    let Some(header) = accept_encoding.filter(|h| !h.trim().is_empty()) else {
        return Some(Coding::Identity);
    };
    let ranges = ranges(header);
    let q_of = |name: &str| -> Option<u16> {
        ranges
            .iter()
            .find(|r| r.value.eq_ignore_ascii_case(name))
            .or_else(|| ranges.iter().find(|r| r.value == "*"))
            .map(|r| r.q)
    };
    let gzip = q_of("gzip").unwrap_or(0);
    let deflate = q_of("deflate").unwrap_or(0);
    let identity = q_of("identity");
    let id_q = identity.unwrap_or(0);
    if gzip > 0 && gzip >= id_q.max(deflate) {
        Some(Coding::Gzip)
    } else if deflate > 0 && deflate >= id_q {
        Some(Coding::Deflate)
    } else if identity == Some(0) {
        None
    } else {
        Some(Coding::Identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PageFormat::*;

    #[test]
    fn the_per_thread_memo_answers_as_the_parser_does_for_every_header_in_turn() {
        let accepts = [
            PIP,
            UV,
            POETRY,
            "text/html",
            "application/json",
            "",
            "*/*;q=0",
        ];
        let codings = ["gzip", "identity;q=0", "br", "deflate, gzip;q=0.5", ""];
        for _ in 0..3 {
            for a in accepts {
                assert_eq!(
                    negotiate_format(None, Some(a)),
                    decide_format(None, Some(a)),
                    "{a:?}"
                );
            }
            for c in codings {
                assert_eq!(negotiate_coding(Some(c)), decide_coding(Some(c)), "{c:?}");
            }
        }
    }

    const PIP: &str = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01";
    const UV: &str = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01";
    const POETRY: &str = "application/vnd.pypi.simple.v1+json, */*;q=0.1";

    #[test]
    fn format_table() {
        let cases: &[(Option<&str>, Option<&str>, Option<PageFormat>)] = &[
            (None, None, Some(Html)),
            (None, Some(""), Some(Html)),
            (None, Some("*/*"), Some(Html)),
            (None, Some("text/html"), Some(Html)),
            (None, Some(V1_HTML), Some(Html)),
            (None, Some(V1_JSON), Some(Json)),
            (None, Some(LATEST_JSON), Some(Json)),
            (None, Some(PIP), Some(Json)),
            (None, Some(UV), Some(Json)),
            (None, Some(POETRY), Some(Json)),
            (
                None,
                Some("application/vnd.pypi.simple.v1+json;q=0.5, text/html"),
                Some(Html),
            ),
            (
                None,
                Some("application/vnd.pypi.simple.v1+json, text/html;q=0.5"),
                Some(Json),
            ),
            (
                None,
                Some("application/vnd.pypi.simple.v1+json, text/html"),
                Some(Html),
            ),
            (
                None,
                Some("application/vnd.pypi.simple.v1+json;q=0, text/html"),
                Some(Html),
            ),
            (None, Some("application/json"), None),
            (None, Some("application/vnd.pypi.simple.v42+xml"), None),
            (None, Some("text/*"), Some(Html)),
            (None, Some("application/*"), Some(Json)),
            (
                None,
                Some("*/*;q=0.5, application/vnd.pypi.simple.v1+json;q=0.4"),
                Some(Html),
            ),
            (None, Some("text/html;q=0"), None),
            (None, Some("*/*;q=0"), None),
            (None, Some("text/html;q=2"), None),
            (
                None,
                Some("text/html;q=abc, application/vnd.pypi.simple.v1+json"),
                Some(Json),
            ),
            (Some(V1_JSON), Some("text/html"), Some(Json)),
            (Some(LATEST_JSON), None, Some(Json)),
            (Some("text/html"), Some(V1_JSON), Some(Html)),
            (Some(LATEST_HTML), Some(V1_JSON), Some(Html)),
            (Some("bogus"), Some(V1_JSON), Some(Json)),
            (Some("bogus"), Some("application/json"), None),
        ];
        for (format, accept, want) in cases {
            assert_eq!(
                negotiate_format(*format, *accept),
                *want,
                "format={format:?} accept={accept:?}"
            );
        }
    }

    #[test]
    fn coding_table() {
        use Coding::*;
        let cases: &[(Option<&str>, Option<Coding>)] = &[
            (None, Some(Identity)),
            (Some(""), Some(Identity)),
            (Some("gzip, deflate"), Some(Gzip)),
            (Some("gzip, deflate, zstd"), Some(Gzip)),
            (Some("deflate, gzip"), Some(Gzip)),
            (Some("deflate"), Some(Deflate)),
            (Some("gzip;q=0.5, deflate"), Some(Deflate)),
            (Some("gzip;q=0"), Some(Identity)),
            (Some("identity"), Some(Identity)),
            (Some("br"), Some(Identity)),
            (Some("*"), Some(Gzip)),
            (Some("identity;q=0"), None),
            (Some("*;q=0"), None),
            (Some("identity;q=0, gzip"), Some(Gzip)),
            (Some("gzip;q=0.3, identity;q=0.5"), Some(Identity)),
            (Some("GZIP"), Some(Gzip)),
        ];
        for (header, want) in cases {
            assert_eq!(negotiate_coding(*header), *want, "{header:?}");
        }
    }

    #[test]
    fn q_values() {
        let cases = [
            ("1", Some(1000)),
            ("0", Some(0)),
            ("0.5", Some(500)),
            ("0.125", Some(125)),
            ("1.000", Some(1000)),
            ("1.5", None),
            ("0.1234", None),
            ("x", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_q(s), want, "{s}");
        }
    }
}
