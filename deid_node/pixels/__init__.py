"""Pixel data: decoding every transfer syntax frame by frame, region rules, finding
burned-in text (OCR and the text detector), blanking it, re-encoding and verifying.

Imported only by the processes that work on pixels, never by a receiving process.
"""
