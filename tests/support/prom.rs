//! A strict reader of the Prometheus text exposition format, for checking `--metrics` files.
#![allow(dead_code)]

use std::collections::BTreeMap;

/// A strict reader of the Prometheus text format (0.0.4): HELP/TYPE comments, then samples
/// `name{label="value",…} number`, names `[a-zA-Z_:][a-zA-Z0-9_:]*`, label values escaped;
/// every sample's family declared by a TYPE line before it. Panics on anything else.
pub fn parse_prometheus(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let name_ok = |n: &str| {
        let mut c = n.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
    };
    let mut typed = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    assert!(text.ends_with('\n'), "ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(name_ok(name), "{line}");
            if kind == "TYPE" {
                let t = parts.next().unwrap();
                assert!(["gauge", "counter", "untyped", "summary", "histogram"].contains(&t));
                assert!(typed.insert(name.to_string()), "TYPE twice: {line}");
            } else {
                assert_eq!(kind, "HELP", "{line}");
            }
            continue;
        }
        let (name, rest) = line.split_at(line.find(['{', ' ']).expect(line));
        assert!(name_ok(name), "{line}");
        assert!(typed.contains(name), "sample before its TYPE: {line}");
        let mut labels = BTreeMap::new();
        let rest = if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices();
            let end;
            loop {
                // label name
                let start = chars.clone().next().unwrap().0;
                let mut eq = None;
                for (i, c) in chars.by_ref() {
                    if c == '=' {
                        eq = Some(i);
                        break;
                    }
                }
                let key = &body[start..eq.expect(line)];
                assert!(name_ok(key), "{line}");
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                let mut value = String::new();
                loop {
                    match chars.next().expect(line).1 {
                        '\\' => match chars.next().expect(line).1 {
                            'n' => value.push('\n'),
                            c @ ('\\' | '"') => value.push(c),
                            other => panic!("bad escape \\{other}: {line}"),
                        },
                        '"' => break,
                        c => value.push(c),
                    }
                }
                labels.insert(key.to_string(), value);
                match chars.next().expect(line) {
                    (_, ',') => continue,
                    (i, '}') => {
                        end = i;
                        break;
                    }
                    other => panic!("{other:?}: {line}"),
                }
            }
            &body[end + 1..]
        } else {
            rest
        };
        let value = rest.trim_start_matches(' ');
        assert_eq!(
            rest.len() - value.len(),
            1,
            "one space before the value: {line}"
        );
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        out.push((name.to_string(), labels, v));
    }
    out
}
