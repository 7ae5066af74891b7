package envelope

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"io"
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
	eocdLen       = 22
	zip64LocLen   = 20
	zip64EOCDLen  = 56
	localHdrLen   = 30
	maxZipComment = 0xffff
)

// zipEntryCount reads the entry count from the end-of-central-directory
// record (or its zip64 form) before archive/zip allocates anything for it.
func zipEntryCount(r io.ReaderAt, size int64) (uint64, error) {
	n := int64(eocdLen + maxZipComment)
	if n > size {
		n = size
	}
	if n < eocdLen {
		return 0, fail(ReasonFormat, "zip: too short")
	}
	buf := make([]byte, n)
	if _, err := r.ReadAt(buf, size-n); err != nil && err != io.EOF {
		return 0, &Error{Reason: ReasonIO, Err: err}
	}
	i := bytes.LastIndex(buf, []byte("PK\x05\x06"))
	if i < 0 || len(buf)-i < eocdLen {
		return 0, fail(ReasonFormat, "zip: no end of central directory")
	}
	count := uint64(binary.LittleEndian.Uint16(buf[i+10:]))
	if count != 0xffff {
		return count, nil
	}
	if i < zip64LocLen || !bytes.Equal(buf[i-zip64LocLen:i-zip64LocLen+4], []byte("PK\x06\x07")) {
		return 0, fail(ReasonFormat, "zip: missing zip64 locator")
	}
	off := int64(binary.LittleEndian.Uint64(buf[i-zip64LocLen+8:]))
	if off < 0 || off > size-zip64EOCDLen {
		return 0, fail(ReasonFormat, "zip: bad zip64 directory offset")
	}
	rec := make([]byte, zip64EOCDLen)
	if _, err := r.ReadAt(rec, off); err != nil {
		return 0, fail(ReasonFormat, "zip: %v", err)
	}
	if !bytes.Equal(rec[:4], []byte("PK\x06\x06")) {
		return 0, fail(ReasonFormat, "zip: bad zip64 directory")
	}
	return binary.LittleEndian.Uint64(rec[32:]), nil
}

// readContainer checks the container layout, names and limits, and reads
// the manifest and signature (both bounded). Payload entries are returned
// unread.
func readContainer(r io.ReaderAt, size int64, l Limits) (*container, error) {
	count, err := zipEntryCount(r, size)
	if err != nil {
		return nil, err
	}
	if count > uint64(l.MaxFiles)+3 {
		return nil, fail(ReasonLimits, "zip: %d entries exceed the limit of %d files", count, l.MaxFiles)
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
