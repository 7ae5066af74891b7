package envelope

import (
	"archive/zip"
	"bufio"
	"encoding/binary"
	"io"
	"math/bits"
	"strings"
)

// container is a checked ASiC-E container read from a spool file.
type container struct {
	manifest  []byte
	signature []byte
	payload   map[string]*zip.File // by exact (NFC) name
	order     []string
}

const (
	eocdLen      = 22
	zip64LocLen  = 20
	zip64EOCDLen = 56
	localHdrLen  = 30
	cdHdrLen     = 46

	// maxZipExtra caps the extra field of a central-directory record.
	// Our sealer writes at most 37 bytes (the extended timestamp, 9, that
	// archive/zip adds for Modified, plus the zip64 block, 28, for entries
	// or offsets beyond 4 GiB); common tools add Unix/NTFS extras of a few
	// dozen bytes. 256 leaves ample room for those while keeping the
	// central directory of a container at the file-count limit small
	// (10003 records × (46 + 256 + 256) bytes ≈ 5.6 MB at the defaults),
	// instead of the 64 KiB per record the format allows.
	maxZipExtra = 256
)

// scanZip walks the end-of-central-directory record (and its zip64 form)
// and the central directory with bounded buffers, before archive/zip reads
// and allocates anything: the end record must close the file, on one disk,
// without comment; the central directory must end right before it (a gap
// before the directory is left to checkLayout) and be no larger than count
// records of the largest allowed size; the entry count is checked against
// MaxFiles (plus mimetype, manifest and signature); every record must have
// a name of at most MaxNameLen bytes (one more for a directory's trailing
// '/'), an extra field of at most maxZipExtra bytes, no comment and disk 0.
// It returns the entry count.
func scanZip(r io.ReaderAt, size int64, l Limits) (uint64, error) {
	le := binary.LittleEndian
	if size < eocdLen {
		return 0, fail(ReasonFormat, "zip: too short")
	}
	e := make([]byte, eocdLen)
	if err := readAtFull(r, e, size-eocdLen); err != nil {
		return 0, err
	}
	if le.Uint32(e) != 0x06054b50 || le.Uint16(e[20:]) != 0 {
		return 0, fail(ReasonFormat, "zip: the end record must close the file, without comment")
	}
	if le.Uint16(e[4:]) != 0 || le.Uint16(e[6:]) != 0 || le.Uint16(e[8:]) != le.Uint16(e[10:]) {
		return 0, fail(ReasonFormat, "zip: multi-disk archives are not allowed")
	}
	count, cdSize, cdOff := uint64(le.Uint16(e[10:])), uint64(le.Uint32(e[12:])), uint64(le.Uint32(e[16:]))
	cdEnd := size - eocdLen // where the central directory must end
	loc := make([]byte, zip64LocLen)
	if cdEnd >= zip64LocLen {
		if err := readAtFull(r, loc, cdEnd-zip64LocLen); err != nil {
			return 0, err
		}
	}
	isLoc := cdEnd >= zip64LocLen && le.Uint32(loc) == 0x07064b50
	switch {
	case count == 0xffff && cdSize == 0xffffffff && cdOff == 0xffffffff:
		// zip64, as archive/zip writes it: all three fields saturated, the
		// locator right before the end record, the zip64 end record right
		// before the locator, without extensible data.
		cdEnd -= zip64LocLen + zip64EOCDLen
		if !isLoc || cdEnd < 0 || le.Uint32(loc[4:]) != 0 || le.Uint64(loc[8:]) != uint64(cdEnd) || le.Uint32(loc[16:]) != 1 {
			return 0, fail(ReasonFormat, "zip: bad zip64 locator")
		}
		rec := make([]byte, zip64EOCDLen)
		if err := readAtFull(r, rec, cdEnd); err != nil {
			return 0, err
		}
		if le.Uint32(rec) != 0x06064b50 || le.Uint64(rec[4:]) != zip64EOCDLen-12 {
			return 0, fail(ReasonFormat, "zip: bad zip64 end record")
		}
		if le.Uint32(rec[16:]) != 0 || le.Uint32(rec[20:]) != 0 || le.Uint64(rec[24:]) != le.Uint64(rec[32:]) {
			return 0, fail(ReasonFormat, "zip: multi-disk archives are not allowed")
		}
		count, cdSize, cdOff = le.Uint64(rec[32:]), le.Uint64(rec[40:]), le.Uint64(rec[48:])
	case count == 0xffff || cdSize == 0xffffffff || cdOff == 0xffffffff:
		return 0, fail(ReasonFormat, "zip: partial zip64 end record")
	case isLoc:
		// archive/zip would look for zip64 records (it also does when the
		// directory size is 0xffff); never let it see a different directory.
		return 0, fail(ReasonFormat, "zip: zip64 locator without zip64 end record")
	}
	if count > uint64(l.MaxFiles)+3 {
		return 0, fail(ReasonLimits, "zip: %d entries exceed the limit of %d files", count, l.MaxFiles)
	}
	if cdOff > uint64(cdEnd) || cdSize != uint64(cdEnd)-cdOff {
		return 0, fail(ReasonFormat, "zip: unexpected bytes between entries and central directory")
	}
	nameMax := min(l.MaxNameLen+1, 0xffff) // +1: a directory's trailing '/'
	maxRec := uint64(cdHdrLen + nameMax + maxZipExtra)
	if hi, lo := bits.Mul64(count, maxRec); count > cdSize/cdHdrLen || hi == 0 && cdSize > lo {
		return 0, fail(ReasonFormat, "zip: central directory of %d bytes does not fit %d entries", cdSize, count)
	}
	br := bufio.NewReaderSize(io.NewSectionReader(r, int64(cdOff), int64(cdSize)), 64<<10)
	hdr := make([]byte, cdHdrLen)
	name := make([]byte, nameMax)
	for i := uint64(0); i < count; i++ {
		if err := readFull(br, hdr); err != nil {
			return 0, err
		}
		if le.Uint32(hdr) != 0x02014b50 {
			return 0, fail(ReasonFormat, "zip: bad central directory record")
		}
		nameLen, extraLen, commentLen := int(le.Uint16(hdr[28:])), int(le.Uint16(hdr[30:])), le.Uint16(hdr[32:])
		if nameLen > len(name) {
			return 0, fail(ReasonNames, "zip: file name longer than %d bytes", l.MaxNameLen)
		}
		if extraLen > maxZipExtra {
			return 0, fail(ReasonFormat, "zip: extra field of %d bytes exceeds %d", extraLen, maxZipExtra)
		}
		if commentLen != 0 {
			return 0, fail(ReasonFormat, "zip: entry comments are not allowed")
		}
		if le.Uint16(hdr[34:]) != 0 {
			return 0, fail(ReasonFormat, "zip: multi-disk archives are not allowed")
		}
		if err := readFull(br, name[:nameLen]); err != nil {
			return 0, err
		}
		if nameLen > l.MaxNameLen && name[nameLen-1] != '/' {
			return 0, fail(ReasonNames, "zip: file name longer than %d bytes", l.MaxNameLen)
		}
		if _, err := br.Discard(extraLen); err != nil {
			return 0, wrapReadErr(err)
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return 0, fail(ReasonFormat, "zip: central directory holds more than %d entries", count)
	}
	return count, nil
}

func readAtFull(r io.ReaderAt, buf []byte, off int64) error {
	n, err := r.ReadAt(buf, off)
	if n == len(buf) {
		return nil
	}
	return wrapReadErr(err)
}

func readFull(r io.Reader, buf []byte) error {
	if _, err := io.ReadFull(r, buf); err != nil {
		return wrapReadErr(err)
	}
	return nil
}

// wrapReadErr classifies a short read inside the container as a format
// error and anything else as I/O.
func wrapReadErr(err error) error {
	if err == nil || err == io.EOF || err == io.ErrUnexpectedEOF {
		return fail(ReasonFormat, "zip: truncated")
	}
	return &Error{Reason: ReasonIO, Err: err}
}

// readContainer checks the container layout, names and limits, and reads
// the manifest and signature (both bounded). Payload entries are returned
// unread.
func readContainer(r io.ReaderAt, size int64, l Limits) (*container, error) {
	// limits and a bounded walk of the central directory before
	// archive/zip reads (and allocates for) every record
	count, err := scanZip(r, size, l)
	if err != nil {
		return nil, err
	}
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return nil, fail(ReasonFormat, "zip: %v", err)
	}
	if uint64(len(zr.File)) != count {
		return nil, fail(ReasonFormat, "zip: entry count mismatch")
	}
	if err := checkLayout(r, size, zr); err != nil {
		return nil, err
	}
	if len(zr.File) < 3 {
		return nil, fail(ReasonFormat, "zip: not an ASiC-E container")
	}
	first := zr.File[0]
	if first.Name != mimetypeName || first.Method != zip.Store || len(first.Extra) != 0 ||
		first.UncompressedSize64 != uint64(len(MimeType)) {
		return nil, fail(ReasonFormat, "zip: mimetype must be the first entry, stored, without extra field")
	}
	if off, err := first.DataOffset(); err != nil || off != localHdrLen+int64(len(mimetypeName)) {
		return nil, fail(ReasonFormat, "zip: mimetype must start the file, without extra field")
	}
	mt, err := readEntry(first, len(MimeType))
	if err != nil || string(mt) != MimeType {
		return nil, fail(ReasonFormat, "zip: mimetype is not %s", MimeType)
	}
	c := &container{payload: map[string]*zip.File{}}
	names := newNameSet()
	var total uint64
	for _, f := range zr.File[1:] {
		if f.Flags&0x1 != 0 {
			return nil, fail(ReasonFormat, "zip: encrypted entries are not allowed")
		}
		if f.Method != zip.Store && f.Method != zip.Deflate {
			return nil, fail(ReasonFormat, "zip: compression method %d not allowed", f.Method)
		}
		name := f.Name
		dir := strings.HasSuffix(name, "/")
		if dir {
			name = strings.TrimSuffix(name, "/")
		}
		n, err := CleanName(name, l.MaxNameLen)
		if err != nil {
			return nil, err
		}
		if n != name {
			return nil, fail(ReasonNames, "zip: file name %q is not NFC", name)
		}
		if dir {
			if f.UncompressedSize64 != 0 {
				return nil, fail(ReasonFormat, "zip: directory entry with content")
			}
			continue
		}
		if f.Method == zip.Deflate && f.UncompressedSize64 > 64<<10 &&
			f.UncompressedSize64/max(f.CompressedSize64, 1) > uint64(l.MaxRatio) {
			return nil, fail(ReasonLimits, "zip: compression ratio of %q exceeds %d", n, l.MaxRatio)
		}
		switch n {
		case mimetypeName:
			return nil, fail(ReasonNames, "zip: duplicate mimetype")
		case ManifestName:
			if c.manifest != nil {
				return nil, fail(ReasonNames, "zip: duplicate manifest")
			}
			if c.manifest, err = readEntry(f, l.MaxManifest); err != nil {
				return nil, err
			}
			continue
		case SignatureName:
			if c.signature != nil {
				return nil, fail(ReasonNames, "zip: duplicate signature")
			}
			if c.signature, err = readEntry(f, l.MaxSignature); err != nil {
				return nil, err
			}
			continue
		}
		if reservedName(n) {
			return nil, fail(ReasonNames, "zip: unexpected entry %q", n)
		}
		if err := names.add(n); err != nil {
			return nil, err
		}
		if len(c.payload) >= l.MaxFiles {
			return nil, fail(ReasonLimits, "zip: more than %d files", l.MaxFiles)
		}
		total += f.UncompressedSize64
		if total > uint64(l.MaxTotal) {
			return nil, fail(ReasonLimits, "zip: payload exceeds %d bytes", l.MaxTotal)
		}
		c.payload[n] = f
		c.order = append(c.order, n)
	}
	if c.manifest == nil {
		return nil, fail(ReasonFormat, "zip: %s missing", ManifestName)
	}
	if c.signature == nil {
		return nil, fail(ReasonSignature, "zip: %s missing", SignatureName)
	}
	return c, nil
}

// readEntry reads a small entry whole, refusing more than limit bytes
// whatever the header claims.
func readEntry(f *zip.File, limit int) ([]byte, error) {
	if f.UncompressedSize64 > uint64(limit) {
		return nil, fail(ReasonLimits, "zip: %s of %d bytes exceeds %d", f.Name, f.UncompressedSize64, limit)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, fail(ReasonFormat, "zip: %s: %v", f.Name, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, int64(limit)+1))
	if err != nil {
		return nil, fail(ReasonFormat, "zip: %s: %v", f.Name, err)
	}
	if len(data) > limit {
		return nil, fail(ReasonLimits, "zip: %s exceeds %d bytes", f.Name, limit)
	}
	return data, nil
}
