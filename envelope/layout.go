package envelope

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"io"
)

// checkLayout enforces a canonical ZIP layout: entries back to back in
// central-directory order, every local header agreeing with its central
// record (version, flags, method, time, date, CRC, sizes, name, extra),
// data descriptors agreeing too, the central directory right after the last
// entry, and the end record last with no comment. archive/zip reads only the
// central directory; without these checks a changed local header, data
// descriptor or gap would go unnoticed, which matters for the fiks profile
// (AES-CBC has no tag, so the container itself must leave no byte unchecked
// that could be flipped without effect).
func checkLayout(r io.ReaderAt, size int64, zr *zip.Reader) error {
	var pos int64
	hdr := make([]byte, localHdrLen)
	for _, f := range zr.File {
		if f.Comment != "" {
			return fail(ReasonFormat, "zip: entry comments are not allowed")
		}
		if _, err := r.ReadAt(hdr, pos); err != nil {
			return fail(ReasonFormat, "zip: local header: %v", err)
		}
		le := binary.LittleEndian
		if le.Uint32(hdr) != 0x04034b50 {
			return fail(ReasonFormat, "zip: entries are not contiguous")
		}
		nameLen, extraLen := int64(le.Uint16(hdr[26:])), int64(le.Uint16(hdr[28:]))
		dataOff, err := f.DataOffset()
		if err != nil || dataOff != pos+localHdrLen+nameLen+extraLen {
			return fail(ReasonFormat, "zip: central directory offset disagrees with the local header")
		}
		ne := make([]byte, nameLen+extraLen)
		if _, err := r.ReadAt(ne, pos+localHdrLen); err != nil {
			return fail(ReasonFormat, "zip: local header: %v", err)
		}
		if string(ne[:nameLen]) != f.Name || !bytes.Equal(ne[nameLen:], f.Extra) {
			return fail(ReasonFormat, "zip: local header name or extra field disagrees with the central directory")
		}
		if le.Uint16(hdr[4:]) != f.ReaderVersion || le.Uint16(hdr[6:]) != f.Flags || le.Uint16(hdr[8:]) != f.Method ||
			le.Uint16(hdr[10:]) != f.ModifiedTime || le.Uint16(hdr[12:]) != f.ModifiedDate {
			return fail(ReasonFormat, "zip: local header disagrees with the central directory")
		}
		crc, csize, usize := le.Uint32(hdr[14:]), le.Uint32(hdr[18:]), le.Uint32(hdr[22:])
		zip64 := f.CompressedSize64 >= 0xffffffff || f.UncompressedSize64 >= 0xffffffff
		dd := f.Flags&0x8 != 0
		sizesOK := func(c, u uint32) bool {
			if zip64 {
				return c == 0xffffffff && u == 0xffffffff || dd && c == 0 && u == 0
			}
			return uint64(c) == f.CompressedSize64 && uint64(u) == f.UncompressedSize64
		}
		if dd {
			if !(crc == 0 && csize == 0 && usize == 0) && !(crc == f.CRC32 && sizesOK(csize, usize)) {
				return fail(ReasonFormat, "zip: local header disagrees with the central directory")
			}
		} else if crc != f.CRC32 || !sizesOK(csize, usize) {
			return fail(ReasonFormat, "zip: local header disagrees with the central directory")
		}
		end := dataOff + int64(f.CompressedSize64)
		if end < dataOff || end > size {
			return fail(ReasonFormat, "zip: entry overruns the container")
		}
		if dd {
			n := 16
			if zip64 {
				n = 24
			}
			d := make([]byte, n)
			if _, err := r.ReadAt(d, end); err != nil {
				return fail(ReasonFormat, "zip: data descriptor: %v", err)
			}
			if le.Uint32(d) != 0x08074b50 || le.Uint32(d[4:]) != f.CRC32 {
				return fail(ReasonFormat, "zip: data descriptor disagrees with the central directory")
			}
			var c, u uint64
			if zip64 {
				c, u = le.Uint64(d[8:]), le.Uint64(d[16:])
			} else {
				c, u = uint64(le.Uint32(d[8:])), uint64(le.Uint32(d[12:]))
			}
			if c != f.CompressedSize64 || u != f.UncompressedSize64 {
				return fail(ReasonFormat, "zip: data descriptor disagrees with the central directory")
			}
			end += int64(n)
		}
		pos = end
	}
	// the end-of-central-directory record: last, no comment, consistent
	if size < eocdLen {
		return fail(ReasonFormat, "zip: too short")
	}
	e := make([]byte, eocdLen)
	if _, err := r.ReadAt(e, size-eocdLen); err != nil {
		return fail(ReasonFormat, "zip: end record: %v", err)
	}
	le := binary.LittleEndian
	if le.Uint32(e) != 0x06054b50 || le.Uint16(e[20:]) != 0 {
		return fail(ReasonFormat, "zip: the end record must close the file, without comment")
	}
	if le.Uint16(e[4:]) != 0 || le.Uint16(e[6:]) != 0 || le.Uint16(e[8:]) != le.Uint16(e[10:]) {
		return fail(ReasonFormat, "zip: multi-disk archives are not allowed")
	}
	cdSize, cdOff := int64(le.Uint32(e[12:])), int64(le.Uint32(e[16:]))
	if cdOff == 0xffffffff || cdSize == 0xffffffff || le.Uint16(e[10:]) == 0xffff {
		return nil // zip64: archive/zip has checked the zip64 records
	}
	if cdOff != pos || cdOff+cdSize != size-eocdLen {
		return fail(ReasonFormat, "zip: unexpected bytes between entries and central directory")
	}
	return nil
}
