use super::*;

#[test]
fn empty_is_an_error() {
    assert!(decode(&[]).is_err());
}
