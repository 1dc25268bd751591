"""Pixel data: decoding every transfer syntax frame by frame (more to come: finding and
blanking burned-in text, re-encoding, verifying; issue 10).

Imported only by the processes that work on pixels, never by a receiving process.
"""
