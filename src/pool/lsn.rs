//! WAL positions (LSNs): Postgres' `X/Y` text as `u64`, and turning a primary's insert position into
//! the position a replica reports once it has replayed everything inserted so far.

/// Parses Postgres' `pg_lsn` text, `X/Y`: the high and low 32 bits in hex.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.trim().split_once('/')?;
    // Checked by hand: `from_str_radix` would also take a leading `+`.
    let valid =
        |part: &str| (1..=8).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid(high) || !valid(low) {
        return None;
    }
    let high = u32::from_str_radix(high, 16).ok()?;
    let low = u32::from_str_radix(low, 16).ok()?;
    Some((u64::from(high) << 32) | u64::from(low))
}

/// Formats an LSN as Postgres prints it (`16/B374D848`), for logs.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Where a server's WAL page headers sit: `wal_block_size` and `wal_segment_size`.
///
/// Why it matters: `pg_current_wal_insert_lsn()` never points at a page boundary. When the last
/// record ends exactly at one, it reports the position after the next page's header (24 bytes, or 40
/// at the start of a segment, e.g. after every `pg_switch_wal()` or `archive_timeout` switch), while a
/// replica that replayed that record reports the boundary itself. Compared raw, the replica would look
/// behind until the primary writes again, which on an idle primary can be forever: read-your-writes
/// reads would never leave the primary, and the time lag would grow past `max_replica_lag_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalLayout {
    block_size: u64,
    segment_size: u64,
}

/// `SizeOfXLogShortPHD` (64-bit servers).
const SHORT_PAGE_HEADER: u64 = 24;
/// `SizeOfXLogLongPHD`, on the first page of each segment (64-bit servers).
const LONG_PAGE_HEADER: u64 = 40;

impl WalLayout {
    /// Postgres' defaults: 8 kB pages, 16 MB segments.
    pub const DEFAULT: WalLayout = WalLayout {
        block_size: 8192,
        segment_size: 16 * 1024 * 1024,
    };

    /// Checks the sizes the way Postgres constrains them (powers of two, a segment holding whole
    /// pages), so the arithmetic below cannot be fooled by a garbled answer.
    pub fn new(block_size: u64, segment_size: u64) -> Option<WalLayout> {
        let ok = block_size.is_power_of_two()
            && block_size > LONG_PAGE_HEADER
            && segment_size.is_power_of_two()
            && segment_size >= block_size;
        ok.then_some(WalLayout {
            block_size,
            segment_size,
        })
    }

    /// The end of the WAL inserted so far, in the terms a replica uses for `pg_last_wal_replay_lsn()`:
    /// a position just past a page header becomes the page boundary. No record can end at those
    /// offsets (a record continued onto a page ends after at least one more aligned word), so this
    /// never makes a replica look further along than it is.
    pub fn insert_to_end(&self, insert_lsn: u64) -> u64 {
        let in_segment = insert_lsn % self.segment_size;
        if in_segment == LONG_PAGE_HEADER {
            return insert_lsn - LONG_PAGE_HEADER;
        }
        let first_page_of_segment = in_segment < self.block_size;
        if !first_page_of_segment && insert_lsn % self.block_size == SHORT_PAGE_HEADER {
            return insert_lsn - SHORT_PAGE_HEADER;
        }
        insert_lsn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_postgres_lsn_text() {
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("0/16B3748"), Some(0x016B_3748));
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("ffffffff/FFFFFFFF"), Some(u64::MAX));
        assert_eq!(parse_lsn(" 1/0 "), Some(1 << 32));
    }

    #[test]
    fn refuses_what_is_not_an_lsn() {
        for bad in [
            "",
            "/",
            "0/",
            "/0",
            "16B3748",
            "1/2/3",
            "g/0",
            "0/x",
            "100000000/0",
            "0/-1",
            "+1/0",
        ] {
            assert_eq!(parse_lsn(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_as_postgres_does() {
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(format_lsn(0), "0/0");
        for lsn in [0, 1, 0xFFFF_FFFF, 1 << 32, u64::MAX, 0x1234_5678_9ABC] {
            assert_eq!(parse_lsn(&format_lsn(lsn)), Some(lsn));
        }
    }

    #[test]
    fn insert_position_after_a_page_header_is_the_page_boundary() {
        let wal = WalLayout::DEFAULT;
        // Mid-segment page: short header.
        assert_eq!(wal.insert_to_end(3 * 8192 + 24), 3 * 8192);
        // Segment start: long header.
        let segment = 16 * 1024 * 1024;
        assert_eq!(wal.insert_to_end(5 * segment + 40), 5 * segment);
        // Offset 24 inside a segment's first page is inside the long header: left alone.
        assert_eq!(wal.insert_to_end(5 * segment + 24), 5 * segment + 24);
    }

    #[test]
    fn positions_where_records_can_end_are_left_alone() {
        let wal = WalLayout::DEFAULT;
        for lsn in [
            3 * 8192,      // a boundary itself
            3 * 8192 + 32, // a continuation ending right after a short header
            3 * 8192 + 40, // likewise (not a segment start, so not a long header)
            3 * 8192 + 4096,
        ] {
            assert_eq!(wal.insert_to_end(lsn), lsn, "{lsn}");
        }
    }

    #[test]
    fn layout_follows_the_server_sizes() {
        let big = WalLayout::new(8192, 64 * 1024 * 1024).expect("valid layout");
        // 16 MB is not a segment start with 64 MB segments: offset 40 is a real position there.
        assert_eq!(
            big.insert_to_end(16 * 1024 * 1024 + 40),
            16 * 1024 * 1024 + 40
        );
        assert_eq!(big.insert_to_end(64 * 1024 * 1024 + 40), 64 * 1024 * 1024);
        let small_pages = WalLayout::new(4096, 1024 * 1024).expect("valid layout");
        assert_eq!(small_pages.insert_to_end(4096 + 24), 4096);
        assert_eq!(WalLayout::new(8000, 16 * 1024 * 1024), None);
        assert_eq!(WalLayout::new(8192, 4096), None);
        assert_eq!(WalLayout::new(0, 0), None);
    }
}
