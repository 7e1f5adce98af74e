//! lseek: `SEEK_SET/CUR/END`, `SEEK_DATA`/`SEEK_HOLE` from the extent map;
//! on a directory, the getdents position (a listing cookie).

use crate::boundary::entry::{Errno, R};
use crate::dispatch::{fd_call, offset};
use crate::state::fds::Desc;
use libc::{c_int, off64_t};
use udax::fs::extent::Lookup;

/// SEEK_DATA / SEEK_HOLE from the extent map.
fn seek_data_hole(f: &udax::vfs::VFile, from: u64, data: bool) -> R<u64> {
    let size = f.len()?;
    if from >= size {
        return Err(Errno(libc::ENXIO));
    }
    let bs = udax::BLOCK_SIZE;
    let mut blk = from / bs;
    loop {
        let at = (blk * bs).max(from);
        if at >= size {
            return if data {
                Err(Errno(libc::ENXIO))
            } else {
                Ok(size)
            };
        }
        match f.iomap(blk)? {
            Lookup::Mapped { len, .. } => {
                if data {
                    return Ok(at);
                }
                blk += len.max(1);
            }
            Lookup::Hole { len } => {
                if !data {
                    return Ok(at);
                }
                if len == u64::MAX {
                    return Err(Errno(libc::ENXIO));
                }
                blk += len.max(1);
            }
        }
    }
}

pub fn lseek_desc(d: &Desc, off: off64_t, whence: c_int) -> R<off64_t> {
    let mut pos = d.pos.lock().unwrap_or_else(|p| p.into_inner());
    if d.is_dir() {
        // A directory offset is a listing position (a cookie: getdents
        // d_off, `state::fds::DirStream`); a seek reads afresh from it.
        let new = match whence {
            libc::SEEK_SET => Some(off),
            libc::SEEK_CUR => (*pos as i64).checked_add(off),
            _ => return Err(Errno(libc::EINVAL)),
        };
        let new = match new {
            Some(n) if n >= 0 => n,
            _ => return Err(Errno(libc::EINVAL)),
        };
        *d.dents.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *pos = new as u64;
        return Ok(new);
    }
    let f = d.file()?;
    if d.owner_pos() {
        // Shared with another process: the offset lives at the owner.
        let r = d.remote()?;
        let new = match whence {
            libc::SEEK_SET => r.seek(0, off)?,
            libc::SEEK_CUR => r.seek(1, off)?,
            libc::SEEK_END => r.seek(2, off)?,
            libc::SEEK_DATA | libc::SEEK_HOLE => {
                let at = seek_data_hole(
                    f,
                    offset(off).map_err(|_| Errno(libc::ENXIO))?,
                    whence == libc::SEEK_DATA,
                )?;
                r.seek(0, i64::try_from(at).map_err(|_| Errno(libc::EOVERFLOW))?)?
            }
            _ => return Err(Errno(libc::EINVAL)),
        };
        return i64::try_from(new).map_err(|_| Errno(libc::EOVERFLOW));
    }
    let new: i128 = match whence {
        libc::SEEK_SET => off as i128,
        libc::SEEK_CUR => *pos as i128 + off as i128,
        libc::SEEK_END => f.len()? as i128 + off as i128,
        libc::SEEK_DATA | libc::SEEK_HOLE => seek_data_hole(
            f,
            offset(off).map_err(|_| Errno(libc::ENXIO))?,
            whence == libc::SEEK_DATA,
        )? as i128,
        _ => return Err(Errno(libc::EINVAL)),
    };
    if new < 0 {
        return Err(Errno(libc::EINVAL));
    }
    let new = i64::try_from(new).map_err(|_| Errno(libc::EOVERFLOW))?;
    *pos = new as u64;
    Ok(new)
}

macro_rules! lseek_fn {
    ($name:ident) => {
        /// # Safety
        /// As lseek(2).
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, off: off64_t, whence: c_int) -> off64_t {
            fd_call!(-1, fd, $name(fd, off, whence), |d| lseek_desc(
                &d, off, whence
            ))
        }
    };
}
lseek_fn!(lseek);
lseek_fn!(lseek64);
