//! Lower-case hexadecimal for tokens, nonces, keys and signatures on the wire.

/// `bytes` as lower-case hex.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Exactly `N` bytes from `2 × N` hex digits (either case), or `None`.
pub fn decode<const N: usize>(hex: &str) -> Option<[u8; N]> {
    if hex.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in hex.as_bytes().chunks_exact(2).enumerate() {
        let digit = |c: u8| char::from(c).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

/// At most `max` bytes from an even number of hex digits (either case), or `None`.
pub fn decode_vec(hex: &str, max: usize) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) || hex.len() / 2 > max {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16);
    hex.as_bytes().chunks_exact(2).map(|p| u8::try_from(digit(p[0])? * 16 + digit(p[1])?).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_bad_input() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(encode(&bytes), "0001abff");
        assert_eq!(decode::<4>("0001ABff"), Some(bytes));
        assert_eq!(decode::<4>("0001abf"), None);
        assert_eq!(decode::<4>("0001abfg"), None);
        assert_eq!(decode::<4>("0001abff00"), None);
        assert_eq!(decode::<2>("é1"), None);
        assert_eq!(decode_vec("0001abFF", 4), Some(bytes.to_vec()));
        assert_eq!(decode_vec("0001abff", 3), None, "longer than allowed");
        assert_eq!(decode_vec("abc", 4), None);
        assert_eq!(decode_vec("é1", 4), None);
    }
}
