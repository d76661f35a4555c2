//! AES-128-CBC (PKCS#7) encryption of HLS segments as they are written, and per-video keys.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use aes::cipher::{generic_array::GenericArray, BlockEncryptMut, KeyIvInit};

type Aes128CbcEnc = cbc::Encryptor<aes::Aes128>;

pub use crate::model::KeyMaterial;

/// Writes one segment into `<final>.part` as bytes arrive (AES-128-CBC encrypted when given a key)
/// and renames it to its final name when finished, so neither clear bytes of an encrypted stream
/// nor a half-written segment is ever visible under the media tree.
pub struct SegmentWriter {
    cipher: Option<Aes128CbcEnc>,
    pending: Vec<u8>,
    file: Option<File>,
    part_path: PathBuf,
    final_path: PathBuf,
}

impl SegmentWriter {
    /// Opens `<path>.part` for writing; `key` turns encryption on.
    pub fn create(path: &Path, key: Option<&KeyMaterial>) -> io::Result<SegmentWriter> {
        let mut part = path.as_os_str().to_owned();
        part.push(".part");
        let part_path = PathBuf::from(part);
        let file = File::create(&part_path)?;
        Ok(SegmentWriter {
            cipher: key.map(|k| Aes128CbcEnc::new(&k.key.into(), &k.iv.into())),
            pending: Vec::with_capacity(64 * 1024),
            file: Some(file),
            part_path,
            final_path: path.to_path_buf(),
        })
    }

    fn encrypt_whole_blocks(&mut self, keep_tail: bool) -> io::Result<()> {
        let n = match self.cipher.as_mut() {
            Some(cipher) => {
                let whole = self.pending.len() / 16 * 16;
                let n = if keep_tail { whole } else { self.pending.len() };
                debug_assert_eq!(n % 16, 0);
                for block in self.pending[..n].chunks_exact_mut(16) {
                    cipher.encrypt_block_mut(GenericArray::from_mut_slice(block));
                }
                n
            }
            None => self.pending.len(),
        };
        let file = self.file.as_mut().ok_or_else(|| io::Error::other("segment already finished"))?;
        file.write_all(&self.pending[..n])?;
        self.pending.drain(..n);
        Ok(())
    }

    /// Pads (PKCS#7, when encrypting), writes the rest and renames to the final name.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.file.is_none() {
            return Ok(());
        }
        if self.cipher.is_some() {
            let pad = 16 - (self.pending.len() % 16);
            self.pending.extend(std::iter::repeat_n(pad as u8, pad));
        }
        self.encrypt_whole_blocks(false)?;
        self.file = None;
        std::fs::rename(&self.part_path, &self.final_path)
    }
}

impl Write for SegmentWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.file.is_none() {
            return Err(io::Error::other("segment already finished"));
        }
        self.pending.extend_from_slice(buf);
        if self.pending.len() >= 256 * 1024 {
            self.encrypt_whole_blocks(true)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.file.is_some() {
            self.encrypt_whole_blocks(true)?;
        }
        Ok(())
    }
}

impl Drop for SegmentWriter {
    fn drop(&mut self) {
        // An unfinished segment (pipeline error, cancel) is removed, never published.
        if self.file.is_some() {
            self.file = None;
            let _ = std::fs::remove_file(&self.part_path);
        }
    }
}

/// Decrypts a whole segment (tests).
#[cfg(test)]
pub fn decrypt(data: &[u8], key: &KeyMaterial) -> Result<Vec<u8>, String> {
    use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut};
    let dec = cbc::Decryptor::<aes::Aes128>::new(&key.key.into(), &key.iv.into());
    dec.decrypt_padded_vec_mut::<Pkcs7>(data).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_in_odd_chunks_and_no_clear_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyMaterial::generate();
        let clear: Vec<u8> = (0..200_003u32).map(|i| (i * 7 % 251) as u8).collect();
        let path = dir.path().join("seg00000.ts");
        let mut enc = SegmentWriter::create(&path, Some(&key)).unwrap();
        for chunk in clear.chunks(1317) {
            enc.write_all(chunk).unwrap();
            enc.flush().unwrap();
        }
        assert!(!path.exists(), "final name appears only when finished");
        enc.finish().unwrap();
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len(), (clear.len() / 16 + 1) * 16);
        assert_ne!(&data[..16], &clear[..16]);
        assert_eq!(decrypt(&data, &key).unwrap(), clear);
        let other = KeyMaterial::generate();
        assert_ne!(decrypt(&data, &other).ok(), Some(clear));
    }

    #[test]
    fn block_aligned_input_gets_a_full_padding_block() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyMaterial::generate();
        let path = dir.path().join("s.ts");
        let mut enc = SegmentWriter::create(&path, Some(&key)).unwrap();
        enc.write_all(&[0x47; 188 * 4]).unwrap();
        enc.finish().unwrap();
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len(), 188 * 4 + 16);
        assert_eq!(decrypt(&data, &key).unwrap(), vec![0x47; 188 * 4]);
    }

    #[test]
    fn clear_writer_writes_bytes_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.ts");
        let mut w = SegmentWriter::create(&path, None).unwrap();
        w.write_all(&[1, 2, 3]).unwrap();
        w.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn unfinished_segment_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.ts");
        let mut enc = SegmentWriter::create(&path, Some(&KeyMaterial::generate())).unwrap();
        enc.write_all(b"partial").unwrap();
        drop(enc);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
