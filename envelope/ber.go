package envelope

import (
	"bufio"
	"errors"
	"io"
)

// berReader reads a BER stream element by element with a hard byte limit.
// Only the levels the CMS layout needs are streamed; small inner elements are
// read whole (definite length, bounded) and parsed with cryptobyte.
type berReader struct {
	r   *bufio.Reader
	pos int64
	max int64
}

type berHeader struct {
	tag    byte // identifier octet (class, constructed bit, number < 31)
	indef  bool
	length int64 // content length when !indef
}

func (h berHeader) constructed() bool { return h.tag&0x20 != 0 }

// frame is an open constructed element.
type frame struct {
	indef bool
	end   int64
}

var errTrunc = errors.New("truncated")

func (b *berReader) readByte() (byte, error) {
	if b.pos >= b.max {
		return 0, fail(ReasonLimits, "envelope larger than %d bytes", b.max)
	}
	c, err := b.r.ReadByte()
	if err != nil {
		if err == io.EOF {
			return 0, fail(ReasonFormat, "cms: %v", errTrunc)
		}
		return 0, &Error{Reason: ReasonIO, Err: err}
	}
	b.pos++
	return c, nil
}

func (b *berReader) header() (berHeader, error) {
	var h berHeader
	t, err := b.readByte()
	if err != nil {
		return h, err
	}
	if t&0x1f == 0x1f {
		return h, fail(ReasonFormat, "cms: high tag numbers not supported")
	}
	h.tag = t
	l, err := b.readByte()
	if err != nil {
		return h, err
	}
	switch {
	case l < 0x80:
		h.length = int64(l)
	case l == 0x80:
		if !h.constructed() {
			return h, fail(ReasonFormat, "cms: indefinite length on a primitive element")
		}
		h.indef = true
	default:
		n := int(l & 0x7f)
		if n > 7 {
			return h, fail(ReasonFormat, "cms: length of length %d", n)
		}
		var v int64
		for range n {
			c, err := b.readByte()
			if err != nil {
				return h, err
			}
			v = v<<8 | int64(c)
		}
		h.length = v
	}
	if !h.indef && h.length > b.max-b.pos {
		return h, fail(ReasonLimits, "cms: element of %d bytes exceeds the envelope limit", h.length)
	}
	return h, nil
}

// expect reads a header and checks its tag.
func (b *berReader) expect(tag byte, what string) (berHeader, error) {
	h, err := b.header()
	if err != nil {
		return h, err
	}
	if h.tag != tag {
		return h, fail(ReasonFormat, "cms: %s: unexpected tag 0x%02x", what, h.tag)
	}
	return h, nil
}

// content reads the content of a definite-length element of at most limit bytes.
func (b *berReader) content(h berHeader, limit int, what string) ([]byte, error) {
	if h.indef {
		return nil, fail(ReasonFormat, "cms: %s: indefinite length not supported here", what)
	}
	if h.length > int64(limit) {
		return nil, fail(ReasonLimits, "cms: %s of %d bytes exceeds %d", what, h.length, limit)
	}
	buf := make([]byte, h.length)
	if _, err := io.ReadFull(b.r, buf); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, fail(ReasonFormat, "cms: %s: %v", what, errTrunc)
		}
		return nil, &Error{Reason: ReasonIO, Err: err}
	}
	b.pos += h.length
	return buf, nil
}

func (b *berReader) enter(h berHeader) frame {
	if h.indef {
		return frame{indef: true}
	}
	return frame{end: b.pos + h.length}
}

// more reports whether frame f has more elements; for an indefinite frame it
// consumes the end-of-contents octets when they come.
func (b *berReader) more(f frame) (bool, error) {
	if !f.indef {
		if b.pos > f.end {
			return false, fail(ReasonFormat, "cms: element overruns its parent")
		}
		return b.pos < f.end, nil
	}
	p, err := b.r.Peek(2)
	if err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF || err == bufio.ErrBufferFull {
			return false, fail(ReasonFormat, "cms: %v", errTrunc)
		}
		return false, &Error{Reason: ReasonIO, Err: err}
	}
	if p[0] == 0 && p[1] == 0 {
		if b.pos+2 > b.max {
			return false, fail(ReasonLimits, "envelope larger than %d bytes", b.max)
		}
		_, _ = b.r.Discard(2)
		b.pos += 2
		return false, nil
	}
	return true, nil
}

// leave checks frame f ends here.
func (b *berReader) leave(f frame, what string) error {
	more, err := b.more(f)
	if err != nil {
		return err
	}
	if more {
		return fail(ReasonFormat, "cms: %s: unexpected trailing element", what)
	}
	return nil
}

// atEOF checks nothing follows.
func (b *berReader) atEOF() error {
	if _, err := b.r.Peek(1); err == io.EOF {
		return nil
	} else if err != nil {
		return &Error{Reason: ReasonIO, Err: err}
	}
	return fail(ReasonFormat, "cms: trailing data after the envelope")
}

// berDepth returns the nesting depth of the BER elements in data, failing
// once maxDepth is exceeded or the encoding is malformed. It runs before any
// third-party parser sees the bytes.
func berDepth(data []byte, maxDepth int) error {
	_, err := berWalk(data, 1, maxDepth, false)
	return err
}

// berWalk walks the elements in data at depth d. When untilEOC is set it
// stops at an end-of-contents marker and returns the bytes consumed
// including it; otherwise it consumes all of data.
func berWalk(data []byte, d, maxDepth int, untilEOC bool) (int, error) {
	if d > maxDepth {
		return 0, fail(ReasonLimits, "asn.1 nesting deeper than %d", maxDepth)
	}
	off := 0
	for off < len(data) {
		if untilEOC && off+1 < len(data) && data[off] == 0 && data[off+1] == 0 {
			return off + 2, nil
		}
		if len(data)-off < 2 {
			return 0, fail(ReasonFormat, "asn.1: truncated header")
		}
		tag := data[off]
		off++
		if tag&0x1f == 0x1f {
			// high tag number: skip its continuation octets
			for {
				if off >= len(data) {
					return 0, fail(ReasonFormat, "asn.1: truncated tag")
				}
				c := data[off]
				off++
				if c&0x80 == 0 {
					break
				}
			}
		}
		if off >= len(data) {
			return 0, fail(ReasonFormat, "asn.1: truncated length")
		}
		l := data[off]
		off++
		constructed := tag&0x20 != 0
		switch {
		case l == 0x80:
			if !constructed {
				return 0, fail(ReasonFormat, "asn.1: indefinite primitive")
			}
			n, err := berWalk(data[off:], d+1, maxDepth, true)
			if err != nil {
				return 0, err
			}
			off += n
			continue
		case l > 0x80:
			n := int(l & 0x7f)
			if n > 4 || off+n > len(data) {
				return 0, fail(ReasonFormat, "asn.1: bad length")
			}
			v := 0
			for i := 0; i < n; i++ {
				v = v<<8 | int(data[off+i])
			}
			off += n
			if v > len(data)-off {
				return 0, fail(ReasonFormat, "asn.1: length overruns data")
			}
			if constructed {
				if _, err := berWalk(data[off:off+v], d+1, maxDepth, false); err != nil {
					return 0, err
				}
			}
			off += v
			continue
		}
		v := int(l)
		if v > len(data)-off {
			return 0, fail(ReasonFormat, "asn.1: length overruns data")
		}
		if constructed {
			if _, err := berWalk(data[off:off+v], d+1, maxDepth, false); err != nil {
				return 0, err
			}
		}
		off += v
	}
	if untilEOC {
		return 0, fail(ReasonFormat, "asn.1: missing end-of-contents")
	}
	return off, nil
}

// appendLength appends a DER length.
func appendLength(b []byte, n int) []byte {
	switch {
	case n < 0x80:
		return append(b, byte(n))
	case n < 0x100:
		return append(b, 0x81, byte(n))
	case n < 0x10000:
		return append(b, 0x82, byte(n>>8), byte(n))
	case n < 0x1000000:
		return append(b, 0x83, byte(n>>16), byte(n>>8), byte(n))
	default:
		return append(b, 0x84, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}
