//! The data format of one `COPY … FROM STDIN`, read from the statement's text per execution: its
//! option values are literals, which the cached plan does not tell apart (`DELIMITER ';'` and
//! `DELIMITER ','` share a plan). COPY is rare, so this parses the text again.

use std::panic::{catch_unwind, AssertUnwindSafe};

use sqlparser::ast::{CopyLegacyCsvOption, CopyLegacyOption, CopyOption, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::ResolveError;

/// How a COPY stream's rows and fields are written (the options that matter to finding a field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyFormat {
    /// Postgres' text format: fields split by `delimiter`, backslash escapes, `null` for NULL.
    Text { delimiter: char, null: String },
    /// CSV: `quote`d fields with `escape`, `null` (unquoted) for NULL, a first `header` line.
    Csv {
        delimiter: char,
        null: String,
        quote: char,
        escape: char,
        header: bool,
    },
    /// The binary format: a header, then tuples of length-prefixed fields.
    Binary,
}

/// The format of the COPY statement in `sql` (the only statement there).
pub fn copy_format(sql: &str) -> Result<CopyFormat, ResolveError> {
    let bad = ResolveError::Copy;
    let statements = catch_unwind(AssertUnwindSafe(|| {
        Parser::parse_sql(&PostgreSqlDialect {}, sql)
    }))
    .map_err(|_| bad("the statement does not parse"))?
    .map_err(|_| bad("the statement does not parse"))?;
    let [Statement::Copy {
        options,
        legacy_options,
        ..
    }] = statements.as_slice()
    else {
        return Err(bad("not a single COPY statement"));
    };
    let mut o = Options::default();
    for option in options {
        match option {
            CopyOption::Format(name) => {
                o.format = Some(match name.value.to_ascii_lowercase().as_str() {
                    "text" => Kind::Text,
                    "csv" => Kind::Csv,
                    "binary" => Kind::Binary,
                    _ => return Err(bad("unknown FORMAT")),
                })
            }
            CopyOption::Delimiter(c) => o.delimiter = Some(*c),
            CopyOption::Null(s) => o.null = Some(s.clone()),
            CopyOption::Header(h) => o.header = *h,
            CopyOption::Quote(c) => o.quote = Some(*c),
            CopyOption::Escape(c) => o.escape = Some(*c),
            CopyOption::Encoding(e) if is_utf8(e) => {}
            CopyOption::Encoding(_) => return Err(bad("ENCODING other than UTF8")),
            CopyOption::Freeze(_)
            | CopyOption::ForceQuote(_)
            | CopyOption::ForceNotNull(_)
            | CopyOption::ForceNull(_) => {}
        }
    }
    for option in legacy_options {
        match option {
            CopyLegacyOption::Binary => o.format = Some(Kind::Binary),
            CopyLegacyOption::Delimiter(c) => o.delimiter = Some(*c),
            CopyLegacyOption::Null(s) => o.null = Some(s.clone()),
            CopyLegacyOption::Csv(csv) => {
                o.format = Some(Kind::Csv);
                for option in csv {
                    match option {
                        CopyLegacyCsvOption::Header => o.header = true,
                        CopyLegacyCsvOption::Quote(c) => o.quote = Some(*c),
                        CopyLegacyCsvOption::Escape(c) => o.escape = Some(*c),
                        CopyLegacyCsvOption::ForceQuote(_)
                        | CopyLegacyCsvOption::ForceNotNull(_) => {}
                    }
                }
            }
            _ => return Err(bad("an option Postgres does not have")),
        }
    }
    Ok(o.format())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Csv,
    Binary,
}

/// Options as given, before the format's defaults.
#[derive(Default)]
struct Options {
    format: Option<Kind>,
    delimiter: Option<char>,
    null: Option<String>,
    header: bool,
    quote: Option<char>,
    escape: Option<char>,
}

impl Options {
    fn format(self) -> CopyFormat {
        match self.format.unwrap_or(Kind::Text) {
            Kind::Text => CopyFormat::Text {
                delimiter: self.delimiter.unwrap_or('\t'),
                null: self.null.unwrap_or_else(|| "\\N".to_owned()),
            },
            Kind::Csv => {
                let quote = self.quote.unwrap_or('"');
                CopyFormat::Csv {
                    delimiter: self.delimiter.unwrap_or(','),
                    null: self.null.unwrap_or_default(),
                    quote,
                    escape: self.escape.unwrap_or(quote),
                    header: self.header,
                }
            }
            Kind::Binary => CopyFormat::Binary,
        }
    }
}

fn is_utf8(encoding: &str) -> bool {
    let e = encoding.to_ascii_lowercase().replace(['-', '_'], "");
    e == "utf8" || e == "unicode"
}

#[cfg(test)]
mod tests;
