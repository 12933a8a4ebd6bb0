//! COPY formats from the statement text: defaults per format, new and legacy option syntax.

use super::*;

#[test]
fn copy_formats() {
    let text = |delimiter, null: &str| CopyFormat::Text {
        delimiter,
        null: null.into(),
    };
    let csv = |delimiter, null: &str, quote, escape, header| CopyFormat::Csv {
        delimiter,
        null: null.into(),
        quote,
        escape,
        header,
    };
    let cases = [
        ("COPY users (id) FROM STDIN", text('\t', "\\N")),
        ("COPY users (id) FROM STDIN WITH (DELIMITER '|', NULL '')", text('|', "")),
        ("COPY users (id) FROM STDIN (FORMAT csv)", csv(',', "", '"', '"', false)),
        (
            "COPY users (id) FROM STDIN (FORMAT CSV, HEADER, QUOTE '''', ESCAPE '\\', DELIMITER ';')",
            csv(';', "", '\'', '\\', true),
        ),
        ("COPY users (id) FROM STDIN CSV HEADER", csv(',', "", '"', '"', true)),
        ("COPY users (id) FROM STDIN DELIMITER ',' NULL 'x'", text(',', "x")),
        ("COPY users (id) FROM STDIN (FORMAT binary)", CopyFormat::Binary),
        ("COPY users (id) FROM STDIN BINARY", CopyFormat::Binary),
        ("COPY users (id) FROM STDIN (ENCODING 'UTF8')", text('\t', "\\N")),
    ];
    for (sql, want) in cases {
        assert_eq!(copy_format(sql), Ok(want), "{sql}");
    }
    for sql in [
        "COPY users (id) FROM STDIN (ENCODING 'LATIN1')",
        "COPY users (id) FROM STDIN (FORMAT parquet)",
        "SELECT 1",
        "COPY (",
    ] {
        assert!(
            matches!(copy_format(sql), Err(ResolveError::Copy(_))),
            "{sql}"
        );
    }
}
