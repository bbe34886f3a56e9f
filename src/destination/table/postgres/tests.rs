use super::*;

#[test]
fn numerics_in_base_10000() {
    // 12345.6789: weight 1, digits [1, 2345, 6789], dscale 4.
    assert_eq!(
        numeric(123_456_789, 4),
        [
            3i16.to_be_bytes(),
            1i16.to_be_bytes(),
            0u16.to_be_bytes(),
            4u16.to_be_bytes(),
            1u16.to_be_bytes(),
            2345u16.to_be_bytes(),
            6789u16.to_be_bytes()
        ]
        .concat()
    );
    // -0.05 (scale 2): weight -1, digits [500].
    assert_eq!(
        numeric(-5, 2),
        [
            1i16.to_be_bytes(),
            (-1i16).to_be_bytes(),
            0x4000u16.to_be_bytes(),
            2u16.to_be_bytes(),
            500u16.to_be_bytes()
        ]
        .concat()
    );
    // 0 and 10000.
    assert_eq!(
        numeric(0, 2),
        [
            0i16.to_be_bytes(),
            0i16.to_be_bytes(),
            0u16.to_be_bytes(),
            2u16.to_be_bytes()
        ]
        .concat()
    );
    assert_eq!(
        numeric(10_000, 0),
        [
            1i16.to_be_bytes(),
            1i16.to_be_bytes(),
            0u16.to_be_bytes(),
            0u16.to_be_bytes(),
            1u16.to_be_bytes()
        ]
        .concat()
    );
}
