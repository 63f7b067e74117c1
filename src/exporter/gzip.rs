//! `Content-Encoding: gzip` for `/metrics`, as one gzip member made of two parts: the shared page,
//! compressed once per page and ended with a full flush (so that nothing after it depends on it),
//! and each scrape's own part, compressed on its own and ending the stream. Clients that read
//! only the first member of a gzip file (curl among them) see the whole response.

use flate2::{Compress, Compression, FlushCompress};

/// The gzip header: deflate, no name, no time, unknown OS.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// What the rest of a response needs to know of a shared page that was compressed: the CRC and
/// length of what it holds.
#[derive(Debug, Clone)]
pub struct SharedPart {
    crc: crc32fast::Hasher,
    len: u64,
}

/// Compresses a shared page: the gzip header (it starts the response), then deflate blocks that
/// do not end the stream.
pub fn shared_part(page: &[u8]) -> (Vec<u8>, SharedPart) {
    let mut deflated = HEADER.to_vec();
    deflate(page, FlushCompress::Full, &mut deflated);
    let mut crc = crc32fast::Hasher::new();
    crc.update(page);
    (
        deflated,
        SharedPart {
            crc,
            len: page.len() as u64,
        },
    )
}

/// The rest of the response after `shared`: `own` compressed, the end of the stream and the
/// gzip trailer (the CRC and length of everything).
pub fn own_part(shared: &SharedPart, own: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(own.len() / 4 + 64);
    deflate(own, FlushCompress::Finish, &mut out);
    let mut crc = shared.crc.clone();
    crc.update(own);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&((shared.len + own.len() as u64) as u32).to_le_bytes());
    out
}

/// Raw deflate of `input` at the fastest level (a scrape's page compresses about tenfold even so).
fn deflate(input: &[u8], flush: FlushCompress, out: &mut Vec<u8>) {
    let mut compress = Compress::new(Compression::fast(), false);
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve((input.len() / 8).max(64 * 1024));
        }
        let taken = (compress.total_in() as usize).min(input.len());
        let Ok(status) = compress.compress_vec(&input[taken..], out, flush) else {
            return;
        };
        let all_taken = compress.total_in() as usize >= input.len();
        // Finished: the stream ended. Flushed: everything taken with room to spare in `out`, as
        // zlib signals a complete flush.
        match flush {
            FlushCompress::Finish if status == flate2::Status::StreamEnd => return,
            FlushCompress::Finish => {}
            _ if all_taken && out.len() < out.capacity() => return,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn the_two_parts_are_one_gzip_member_of_the_whole_response() {
        let page: Vec<u8> = (0..200_000)
            .flat_map(|i| format!("metric{{n=\"{}\"}} {i}\n", i % 97).into_bytes())
            .collect();
        let own = b"# HELP own x\n# TYPE own gauge\nown 1\n";
        let (deflated, shared) = shared_part(&page);
        let body = [deflated.clone(), own_part(&shared, own)].concat();
        assert!(body.len() * 5 < page.len(), "{} of {}", body.len(), page.len());
        // Only the first member is read: it must hold everything.
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, [page.as_slice(), own.as_slice()].concat());
        // And again from the same shared part: it is reused by every scrape of the page.
        let again = [deflated, own_part(&shared, b"own 2\n")].concat();
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&again[..])
            .read_to_end(&mut decoded)
            .unwrap();
        assert!(decoded.ends_with(b"own 2\n"));
    }
}
