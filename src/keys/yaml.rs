//! YAML text that holds key material (the config, the key archive), built in one zeroizing
//! buffer. The text is produced twice by the same closure: once to count its bytes, once into a
//! buffer of exactly that size, so the buffer never grows and no reallocation frees an unzeroed
//! copy; quoted values are escaped straight into it, with no temporary `String`.

use std::fmt;

use zeroize::Zeroizing;

/// Where a renderer writes: either counting bytes or appending to the sized buffer.
pub struct Yaml<'a> {
    out: Option<&'a mut String>,
    len: usize,
}

impl Yaml<'_> {
    /// Text written as is (field names, indentation, values that need no quoting).
    pub fn raw(&mut self, s: &str) {
        self.len += s.len();
        if let Some(out) = self.out.as_deref_mut() {
            out.push_str(s);
        }
    }

    /// A double-quoted YAML scalar: `"` and `\` escaped, and every control, line-separator or
    /// byte-order character written as `\uXXXX`, so any string parses back unchanged.
    pub fn quoted(&mut self, s: &str) {
        self.raw("\"");
        let mut start = 0;
        for (i, c) in s.char_indices() {
            let escape = match c {
                '"' => Some('"'),
                '\\' => Some('\\'),
                c if needs_code(c) => None,
                _ => continue,
            };
            self.raw(&s[start..i]);
            match escape {
                Some(e) => {
                    let pair = [b'\\', e as u8];
                    // Both bytes are ASCII.
                    self.raw(std::str::from_utf8(&pair).unwrap_or_default());
                }
                None => {
                    let mut code = [0u8; 6];
                    self.raw(unicode_escape(c, &mut code));
                }
            }
            start = i + c.len_utf8();
        }
        self.raw(&s[start..]);
        self.raw("\"");
    }
}

impl fmt::Write for Yaml<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.raw(s);
        Ok(())
    }
}

fn needs_code(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
}

/// `\uXXXX` for a character of the Basic Multilingual Plane (every character `needs_code` picks).
fn unicode_escape(c: char, buf: &mut [u8; 6]) -> &str {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let v = u32::from(c);
    buf[0] = b'\\';
    buf[1] = b'u';
    for (i, shift) in [12u32, 8, 4, 0].into_iter().enumerate() {
        buf[2 + i] = HEX[((v >> shift) & 0xF) as usize];
    }
    std::str::from_utf8(buf).unwrap_or_default()
}

/// Runs `write` once to size the text and once to fill it; the result never reallocated.
pub fn render(write: impl Fn(&mut Yaml<'_>)) -> Zeroizing<String> {
    let mut counter = Yaml { out: None, len: 0 };
    write(&mut counter);
    let mut text = Zeroizing::new(String::with_capacity(counter.len));
    let (ptr, capacity) = (text.as_ptr(), text.capacity());
    let mut filler = Yaml {
        out: Some(&mut text),
        len: 0,
    };
    write(&mut filler);
    // The two passes must agree; a difference is a bug in a renderer (it wrote something that
    // depends on state other than its inputs), and would mean a reallocation.
    debug_assert_eq!(filler.len, counter.len);
    debug_assert!(text.as_ptr() == ptr && text.capacity() == capacity);
    text
}

#[cfg(test)]
mod tests {
    use std::fmt::Write;

    use super::*;

    #[test]
    fn text_is_written_into_one_buffer_of_its_exact_size() {
        let secret = "c2VjcmV0LWtleS1tYXRlcmlhbC0zMi1ieXRlcyE=";
        let text = render(|y| {
            let _ = writeln!(y, "keys:");
            for n in 0..50 {
                let _ = write!(y, "  - name: ");
                y.quoted(&format!("key-{n}"));
                y.raw("\n    secret: ");
                y.quoted(secret);
                y.raw("\n");
            }
        });
        assert_eq!(text.len(), text.capacity(), "the buffer was sized exactly");
        assert_eq!(text.matches(secret).count(), 50);
    }

    #[test]
    fn quoted_strings_parse_back_unchanged() {
        for s in [
            "plain",
            "",
            "with \"quotes\" and \\ backslashes",
            "line\nbreak\ttab\r\u{0}nul",
            "ünïcødé – ok \u{2028} \u{feff} \u{85} \u{7f}",
            ": - # & * ! | > ' % @ `",
        ] {
            let text = render(|y| {
                y.raw("v: ");
                y.quoted(s);
                y.raw("\n");
            });
            #[derive(serde::Deserialize)]
            struct V {
                v: String,
            }
            let back: V = serde_saphyr::from_str(&text).unwrap();
            assert_eq!(back.v, s, "{}", text.as_str());
            let json: String = serde_json::from_str(text.trim_start_matches("v: ").trim()).unwrap();
            assert_eq!(json, s, "the escapes are JSON's too");
        }
    }
}
