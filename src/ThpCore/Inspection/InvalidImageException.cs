using System;

namespace ThpCore.Inspection;

/// <summary>
/// A guest image that cannot be used: unreadable, empty, or malformed. The message says what is wrong and,
/// where it applies, at which file offset.
/// </summary>
public sealed class InvalidImageException : Exception
{
    /// <summary>Creates the exception with a message that says what is wrong.</summary>
    public InvalidImageException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message that says what is wrong and the exception that revealed it.</summary>
    public InvalidImageException(string message, Exception inner)
        : base(message, inner)
    {
    }

    internal InvalidImageException(string path, string message, Exception? inner = null)
        : base($"{path}: {message}", inner)
    {
        Path = path;
    }

    /// <summary>The image file, when known.</summary>
    public string? Path { get; }
}
