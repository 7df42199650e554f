//! The report the golden tests print on a mismatch (`common::diff`): lines
//! compared as multisets, so a duplicated or lost copy of a line shows, and
//! a difference of order alone is named as such.

mod common;

use common::diff;

#[test]
fn equal_texts_have_no_diff() {
    assert_eq!(diff("f", "a\nb\n", "a\nb\n"), None);
    assert_eq!(diff("f", "", ""), None);
}

#[test]
fn missing_and_extra_lines_are_shown_once_each() {
    assert_eq!(
        diff("f", "a\nb\nc\n", "a\nc\nd\n").unwrap(),
        "f: expected 3 lines, got 3\n  - b\n  + d\n"
    );
}

#[test]
fn a_line_expected_twice_but_present_once_is_shown_with_counts() {
    assert_eq!(
        diff("f", "a\nb\na\n", "a\nb\n").unwrap(),
        "f: expected 3 lines, got 2\n  - a (expected 2, got 1)\n"
    );
}

#[test]
fn a_duplicated_line_is_shown_with_counts() {
    assert_eq!(
        diff("f", "a\nb\n", "a\nb\nb\nb\n").unwrap(),
        "f: expected 2 lines, got 4\n  + b (expected 1, got 3)\n"
    );
}

#[test]
fn a_difference_of_order_alone_is_named_with_its_first_line() {
    assert_eq!(
        diff("f", "a\nb\nc\n", "a\nc\nb\n").unwrap(),
        "f: expected 3 lines, got 3\n  (same lines, different order; line 2 is expected to be\n    b\n  but is\n    c)\n"
    );
}

#[test]
fn duplicates_in_another_order_are_a_difference_of_order() {
    let d = diff("f", "a\na\nb\n", "a\nb\na\n").unwrap();
    assert!(d.contains("same lines, different order; line 2"), "{d}");
    assert!(!d.contains("  - ") && !d.contains("  + "), "{d}");
}

#[test]
fn a_difference_of_line_endings_alone_is_named() {
    assert_eq!(
        diff("f", "a\nb\n", "a\nb").unwrap(),
        "f: expected 2 lines, got 2\n  (same lines in the same order; line endings differ)\n"
    );
}
