//! The IDX parsers on arbitrary bytes: raw, and (for the first byte odd) the rest wrapped in a valid
//! gzip stream so that the parser behind the decompressor sees arbitrary headers too. Inputs that
//! already start with `1f 8b` take the gzip path as they are (corrupt streams). Every input must give
//! `Ok` or `Err`: no panic, no abort, no allocation beyond what the input decompresses to.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use vaegpu::data::{self, Dataset, Split};

fn check(bytes: &[u8]) {
    let images = data::parse_images(bytes);
    let labels = data::parse_labels(bytes);
    // The limited parsers (--train-limit): the first `limit` items, and where the whole file parses,
    // exactly the whole parse cut short.
    let limit = bytes.len() % 7;
    if let Ok((im, declared)) = data::parse_images_limited(bytes, Some(limit)) {
        assert_eq!(im.n, limit.min(declared));
        assert_eq!(im.pixels.len(), im.n * im.rows * im.cols, "limited pixels do not match the header");
        if let Ok(full) = &images {
            let mut cut = full.clone();
            cut.truncate(limit);
            assert_eq!((cut, full.n), (im, declared));
        }
    } else {
        assert!(images.is_err(), "a file that parses whole must parse limited");
    }
    if let Ok((lb, declared)) = data::parse_labels_limited(bytes, Some(limit)) {
        assert_eq!(lb.len(), limit.min(declared));
        if let Ok(full) = &labels {
            assert_eq!((&full[..lb.len()], full.len()), (&lb[..], declared));
        }
    } else {
        assert!(labels.is_err(), "a file that parses whole must parse limited");
    }
    if let Ok(im) = &images {
        assert_eq!(im.pixels.len(), im.n * im.rows * im.cols, "pixels do not match the header");
        assert_eq!(im.pixels_per_image(), im.rows * im.cols);
        assert!(im.image(im.n - 1).is_some() && im.image(im.n).is_none());
    }
    // Labels for whatever parsed: a split and a data set, and a count that disagrees.
    if let Ok(im) = images {
        let n = im.n;
        assert!(Split::new("train", im.clone(), vec![0; n + 1]).is_err());
        let split = Split::new("train", im, vec![0; n]).expect("matching counts");
        assert!(Dataset::new("fuzz".into(), split.clone(), split, Default::default(), false).is_ok());
    }
    if let Ok(lb) = labels {
        assert!(!lb.is_empty());
    }
}

fuzz_target!(|input: &[u8]| {
    check(input);
    if let Some((&first, rest)) = input.split_first() {
        if first & 1 == 1 {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(rest).unwrap();
            check(&enc.finish().unwrap());
        } else {
            assert!(data::is_gzip(rest) == rest.starts_with(&[0x1f, 0x8b]));
        }
    }
});
