package envelope

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// FilesFromPaths turns paths into Files: a folder contributes every regular
// file below it under its path relative to the folder; a single file is
// stored under its base name. Symbolic links and other irregular files are
// refused rather than followed.
func FilesFromPaths(paths ...string) ([]File, error) {
	var out []File
	for _, p := range paths {
		st, err := os.Lstat(p)
		if err != nil {
			return nil, fmt.Errorf("files: %w", err)
		}
		switch {
		case st.Mode().IsRegular():
			out = append(out, osFile(p, filepath.Base(p), st.Size()))
		case st.IsDir():
			var found []File
			err := filepath.WalkDir(p, func(fp string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				if d.IsDir() {
					return nil
				}
				if !d.Type().IsRegular() {
					return fmt.Errorf("%s: not a regular file", fp)
				}
				info, err := d.Info()
				if err != nil {
					return err
				}
				rel, err := filepath.Rel(p, fp)
				if err != nil {
					return err
				}
				found = append(found, osFile(fp, filepath.ToSlash(rel), info.Size()))
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("files: %w", err)
			}
			sort.Slice(found, func(i, j int) bool { return found[i].Name < found[j].Name })
			out = append(out, found...)
		default:
			return nil, fmt.Errorf("files: %s: not a regular file or folder", p)
		}
	}
	return out, nil
}

func osFile(fsPath, name string, size int64) File {
	return File{
		Name:      name,
		MediaType: mediaType(name),
		Size:      size,
		Open:      func() (io.ReadCloser, error) { return os.Open(fsPath) },
	}
}

var mediaTypes = map[string]string{
	".pdf":  "application/pdf",
	".xml":  "application/xml",
	".json": "application/json",
	".txt":  "text/plain; charset=utf-8",
	".csv":  "text/csv",
	".html": "text/html",
	".jpg":  "image/jpeg",
	".jpeg": "image/jpeg",
	".png":  "image/png",
	".gif":  "image/gif",
	".tif":  "image/tiff",
	".tiff": "image/tiff",
	".zip":  "application/zip",
	".gz":   "application/gzip",
	".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
	".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
	".odt":  "application/vnd.oasis.opendocument.text",
	".mp4":  "video/mp4",
}

// mediaType guesses from the extension with a fixed table (the system's
// mime.types differs between machines); unknown is application/octet-stream.
func mediaType(name string) string {
	if t, ok := mediaTypes[strings.ToLower(path.Ext(name))]; ok {
		return t
	}
	return "application/octet-stream"
}

// compressedExt are formats that are compressed already: deflating them
// again costs time and saves nothing.
var compressedExt = map[string]bool{
	".pdf": true, ".jpg": true, ".jpeg": true, ".png": true, ".gif": true, ".zip": true,
	".gz": true, ".bz2": true, ".xz": true, ".zst": true, ".7z": true, ".docx": true,
	".xlsx": true, ".pptx": true, ".odt": true, ".ods": true, ".mp4": true, ".mp3": true,
	".jp2": true, ".heic": true, ".webp": true, ".asice": true, ".p7m": true,
}

// deflateMax is the largest file Seal deflates; larger files are stored.
const deflateMax = 8 << 20

// shouldDeflate picks Deflate for small files in formats that compress, and
// Store for large or already-compressed ones (see docs/envelope.md).
func shouldDeflate(f File) bool {
	if f.Size > deflateMax || f.Size < 256 {
		return false
	}
	if compressedExt[strings.ToLower(path.Ext(f.Name))] {
		return false
	}
	mt := strings.ToLower(f.MediaType)
	for _, p := range []string{"image/", "video/", "audio/", "application/zip", "application/gzip", "application/pdf"} {
		if strings.HasPrefix(mt, p) {
			return false
		}
	}
	return true
}
