//! The names Postgres gives output columns (parser's `FigureColname`), which a bare name in ORDER BY
//! refers to before any table column: `SELECT b::int AS a … ORDER BY a` sorts by the cast.

use sqlparser::ast::{DataType, Expr, Ident, ObjectName, ObjectNamePart, TrimWhereField};

/// An identifier as Postgres folds it: unquoted names are lowercased.
pub(super) fn folded(ident: &Ident) -> String {
    match ident.quote_style {
        None => ident.value.to_lowercase(),
        Some(_) => ident.value.clone(),
    }
}

/// The last part of a (possibly qualified) name, folded.
pub(super) fn last_name(name: &ObjectName) -> Option<String> {
    match name.0.last()? {
        ObjectNamePart::Identifier(ident) => Some(folded(ident)),
        ObjectNamePart::Function(_) => None,
    }
}

/// An unaliased item's output name, or `None` for `?column?`.
pub(super) fn output_name(expr: &Expr) -> Option<String> {
    figure(expr).map(|(name, _)| name)
}

/// A name and how strong it is: 2 from a column or function, 1 from a type or keyword (a cast of a
/// named expression keeps the expression's name, `CASE` keeps its ELSE's).
fn figure(expr: &Expr) -> Option<(String, u8)> {
    let keyword = |name: &str| Some((name.to_string(), 1));
    let strong = |name: &str| Some((name.to_string(), 2));
    match expr {
        Expr::Identifier(ident) => Some((folded(ident), 2)),
        Expr::CompoundIdentifier(parts) => Some((folded(parts.last()?), 2)),
        Expr::Function(f) => Some((last_name(&f.name)?, 2)),
        Expr::Nested(inner) | Expr::Collate { expr: inner, .. } => figure(inner),
        Expr::Cast {
            expr, data_type, ..
        } => match figure(expr) {
            Some((name, 2)) => Some((name, 2)),
            _ => Some((type_name(data_type), 1)),
        },
        Expr::TypedString(typed) => Some((type_name(&typed.data_type), 1)),
        Expr::Case { else_result, .. } => match else_result.as_deref().and_then(figure) {
            Some((name, 2)) => Some((name, 2)),
            _ => keyword("case"),
        },
        Expr::Extract { .. } => strong("extract"),
        Expr::Substring { .. } => strong("substring"),
        Expr::Position { .. } => strong("position"),
        Expr::Overlay { .. } => strong("overlay"),
        Expr::Ceil { .. } => strong("ceil"),
        Expr::Floor { .. } => strong("floor"),
        Expr::AtTimeZone { .. } => strong("timezone"),
        Expr::Trim { trim_where, .. } => match trim_where {
            Some(TrimWhereField::Leading) => strong("ltrim"),
            Some(TrimWhereField::Trailing) => strong("rtrim"),
            _ => strong("btrim"),
        },
        Expr::Array(_) => strong("array"),
        Expr::Tuple(_) => strong("row"),
        Expr::Interval(_) => keyword("interval"),
        Expr::Exists { .. } => strong("exists"),
        _ => None,
    }
}

/// The name Postgres' grammar gives a type in a cast (`int` is `int4`).
fn type_name(data_type: &DataType) -> String {
    let text = data_type.to_string().to_lowercase();
    let base = text.split('(').next().unwrap_or_default().trim();
    let mapped = match base {
        "int" | "integer" => "int4",
        "bigint" => "int8",
        "smallint" => "int2",
        "real" => "float4",
        "float" | "double precision" => "float8",
        "boolean" => "bool",
        "decimal" | "dec" => "numeric",
        "character varying" => "varchar",
        "char" | "character" => "bpchar",
        "timestamp with time zone" => "timestamptz",
        "timestamp without time zone" => "timestamp",
        "time without time zone" => "time",
        "time with time zone" => "timetz",
        other => other,
    };
    mapped.rsplit('.').next().unwrap_or(mapped).to_string()
}
