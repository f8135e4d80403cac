/// A path segment compared and hashed by its exact UTF-8 bytes, as Traefik compares paths.
///
/// Swift's `String ==` uses Unicode canonical equivalence (U+212A KELVIN SIGN equals "K", "é" equals
/// "e\u{301}"), so a route literal could match a spelling that Traefik, comparing bytes, routes elsewhere.
struct ExactSegment: Hashable, Sendable {
    let text: Substring

    init(_ text: Substring) { self.text = text }
    init(_ text: String) { self.text = text[...] }

    static func == (lhs: ExactSegment, rhs: ExactSegment) -> Bool {
        lhs.text.utf8.count == rhs.text.utf8.count && lhs.text.utf8.elementsEqual(rhs.text.utf8)
    }

    func hash(into hasher: inout Hasher) {
        // Both branches feed the same bytes in one call, so equal values always hash alike.
        let hashed: Void? = text.utf8.withContiguousStorageIfAvailable { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
        if hashed == nil { Array(text.utf8).withUnsafeBytes { hasher.combine(bytes: $0) } }
    }
}
